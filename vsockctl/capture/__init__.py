"""vsockctl capture: the packets of the kernel's virtio-family transports, seen on a vsockmon link.

packet (one frame decoded), link (the vsockmon interface and its module),
live (reading it through AF_PACKET), pcap (files tcpdump and tshark share),
flows (each connection followed: its packets, its ends, its flow control).
"""
