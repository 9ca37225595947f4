"""The Redis layer: how asynq-aio talks to redis-py. Private to ``asynq_aio.protocol``.

Everything outside ``asynq_aio/protocol/`` reaches Redis through the public names of the protocol
modules (``protocol.session.RedisSession``, the stores it builds), never through this package, so
that a change of redis-py (or of how we use it) stays inside this directory. One job per module:

- ``clients.py``: builds redis-py clients from the connection options, redis-py's retries off;
- ``errors.py``: which redis-py errors are transient, and clearer messages for the others;
- ``ops.py``: what a batch is made of (commands, Lua script calls);
- ``transport.py``: the retry loop and every call, script, batch and pipeline on a client;
- ``pubsub.py``: a subscription that survives connection loss and node failure;
- ``redispy.py``: the one module that touches redis-py's internals (and says which).
"""
