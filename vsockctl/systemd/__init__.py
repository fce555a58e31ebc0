"""Running under systemd: sockets it passes (socket activation) and what we tell it
(notify), both by their documented environment protocols, without libsystemd."""
