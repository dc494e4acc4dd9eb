"""``adlight serve --exported DIR``: an exported model behind HTTP, on LitServe.

LitServe (Lightning's serving engine: FastAPI and uvicorn underneath) runs the
:class:`~adlight.inference.Inferencer` in worker processes and batches requests that arrive
together into one runtime call. This package adds what an inspection line needs around it:

- :mod:`.gate`: an ASGI middleware in front of ``POST /predict`` that enforces the body limit,
  turns multipart files or a raw image body into one canonical payload and answers malformed
  requests with a 4xx JSON error;
- :mod:`.images`: image bytes -> the uint8 pixels the Inferencer scores (limits on pixels,
  channels the model can take), or a :class:`BadImage` naming the problem;
- :mod:`.responses`: one prediction -> its JSON (score, decision, threshold and its source,
  on request the map and mask as base64 PNG and the defect regions as boxes with areas);
- :mod:`.api`: the LitAPI (decode, batch, predict, unbatch, encode) where a bad image fails its
  own request only, never the batch it arrived with;
- :mod:`.command`: the command line.

Like :mod:`adlight.inference`, it needs neither torch nor Lightning's training stack
(``pip install "adlight[serve]"``).
"""
