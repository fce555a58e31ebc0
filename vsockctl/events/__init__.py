"""Every ``--json`` record: what each holds, in one vocabulary, checked as it goes out.

Each line vsockctl prints with ``--json`` is one JSON object whose ``event``
key names its kind. Each kind is a ``TypedDict`` declared once, here, whose
keys carry their meaning (``record`` says how): ``transfer`` (send, recv,
listen, connect, and the ``error`` record of every command), ``system`` (info,
ls, vms, sockopt), ``throughput`` and ``forward``. ``catalog`` lists them all
with the vocabulary they share; the man pages are generated from it and the
tests check every record printed against it.
"""
