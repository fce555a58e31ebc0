"""The socket layer: AF_VSOCK addresses, sockets, socket options and hybrid vsock.

Everything else is built on this package and it imports nothing of the rest
but :mod:`vsockctl.errors` and :mod:`vsockctl.units`: ``address`` parses
``CID:PORT``, ``sockets`` makes, binds and connects vsock sockets (with their
errors named), ``sockopts`` is the table of vsock socket options and
``sockopt_apply`` reads and sets them, ``hybrid`` speaks the ``CONNECT <port>``
protocol of Firecracker-style Unix muxes, and ``route`` is where a connection
goes: a vsock address or a hybrid socket and port, one value made once.
"""
