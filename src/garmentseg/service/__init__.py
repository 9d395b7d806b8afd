"""What runs inside the Bento server; `garmentseg.deploy` starts and checks it from outside.

    errors     RequestError: every refusal is a status and a JSON body naming the rule
    uploads    the form rules and how an upload reaches a handler (parsed once, kept in memory)
    guard      ASGI middleware: route, method, token, content type and size before the body is parsed
    responses  the endpoints' pipeline (decode -> model -> encode) and their answers
    review     /cutout's Dice estimate and review flag headers, and ?queue=true into the review queue
    runtime    ModelRuntime (load off the request path, hot reload on alias moves) and the metrics
    batching   the adaptive-batching endpoint's wire format and forward pass

The names below are the service's contract with the processes that start and call it.
"""

# The model to serve, read by the service; set by `garmentseg serve`, tests and the Bento's environment.
MODEL_URI_ENV = "GARMENTSEG_MODEL_URI"
# Seconds to sleep before the warm-up inference, so tests can observe /readyz flipping; never set in production.
WARMUP_DELAY_ENV = "GARMENTSEG_WARMUP_DELAY_S"
# Every answer names the model that produced it.
HEADER_NAME, HEADER_VERSION = "X-Model-Name", "X-Model-Version"
