"""Moving bytes between a connected socket and a file, a pipe or generated data.

``engine`` runs a transfer (send, receive, both ways), counting in ``stats``;
``streams`` holds where bytes come from and go to; ``kernel_copy`` lets the
kernel copy where that is faster (sendfile, splice); ``stall`` says so when a
transfer stops moving.
"""
