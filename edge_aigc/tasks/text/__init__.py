"""Text generation: task.py (TextTask), chat.py (chat templates, sandboxed), sessions.py (a
conversation's KV cache between turns), detok.py (streaming detokenization), sampling.py, and
the decode loops: concat_loop.py (the cache passed step to step), shared_loop.py (one buffer,
GroupQueryAttention), litert_loop.py (LiteRT's signatures)."""
