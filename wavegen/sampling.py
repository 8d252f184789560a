"""The sampling rule's defaults, shared by ``generate``, the commands and the training
config (this module imports nothing heavy, so the command line can read it at start-up).

Nucleus sampling (``top_p`` < 1) draws each sample among the most probable values that
together hold ``top_p`` of the probability. The tail it drops is what turns some models'
continuations into a broadband hiss at top_p = 1, but it also holds what starts a sound
after silence and the attacks of new notes. So the nucleus applies only while a stream is
audible: while its level (an exponential average of its squared amplitudes over
``LEVEL_SECONDS``) is above ``QUIET_DBFS``; a quieter stream draws from the whole
distribution. It stays opt-in (``TOP_P`` = 1): it made one model's continuations tonal and
another's fall silent (the README's sampling section has the measurements), so
``wavegen quality --top-p`` is the way to choose it for a model.
"""

TEMPERATURE = 1.0
TOP_P = 1.0
QUIET_DBFS = -50.0  # level below which a stream draws from the whole distribution
LEVEL_SECONDS = 0.032  # time constant of a stream's level
