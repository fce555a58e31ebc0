"""The hybrid stage: vsockctl against a real hybrid vsock VMM mux.

rust-vmm's vhost-device-vsock (unpacked by ``scripts/vm-packages``) runs on
this machine as the vhost-user backend of the test VM's vsock device, CID 4.
Its host side is the Unix-socket mux Firecracker and Cloud Hypervisor have:
``CONNECT <port>`` on ``mux.sock`` reaches a guest port, and a guest's
connection to CID 2 port P reaches whoever listens on ``mux.sock_P``. The
tests drive this machine's end (Unix sockets only: nothing here opens
AF_VSOCK traffic) and the test VM's end through the agent
(:mod:`tests.nested.agent`) on a virtio-serial port. Tests carry
``@pytest.mark.hybrid``; ``scripts/vmtest --hybrid`` runs them.
"""
