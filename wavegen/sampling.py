"""The sampling rule's defaults, shared by ``generate``, the commands and the training
config (this module imports nothing heavy, so the command line can read it at start-up).

Nucleus sampling (``top_p`` < 1) draws each sample among the most probable classes that
together hold ``top_p`` of the probability. The tail it drops is what turns a trained
model's continuations into a broadband hiss at top_p = 1; the README's sampling section has
the measurements. It starts ``TOP_P_DELAY`` seconds into a stream (a prime counts), because
a clip generated from scratch starts in silence, where the nucleus holds the silence class
alone and the stream would never leave it.
"""

TEMPERATURE = 1.0
TOP_P = 0.98
TOP_P_DELAY = 0.25  # seconds
