"""gmai.serve: the OpenAI-compatible API (``api``, ``batching``, ``images``) and the Gradio demo (``ui``).

    GMAI_API_KEY=KEY gmai serve CHECKPOINT --host 127.0.0.1 --port 8000 [--allowed-root DIR]
    gmai serve CHECKPOINT --api-key-file /run/secrets/gmai-key
    gmai demo-ui CHECKPOINT --port 7860

Clients: the ``openai`` package, ``gmai.infer.load_backend("http://127.0.0.1:8000/v1", api_key=KEY)``,
the data engine's LLM generator, rejection sampling and ``gmai eval``.
"""
