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

A trained model samples by its run's rule unless told otherwise: ``train.example_temperature``
and ``train.example_top_p``, which its examples and sample checks used and its checkpoints
keep (``run_rule``); a model that no run describes, by the defaults below.
"""

TEMPERATURE = 1.0
TOP_P = 1.0
QUIET_DBFS = -50.0  # level below which a stream draws from the whole distribution
LEVEL_SECONDS = 0.032  # time constant of a stream's level


def run_rule(model) -> tuple[float, float]:
    """(temperature, top_p) that ``model`` samples at when a caller names neither: its
    training run's (``model.sampling_rule``, set from a checkpoint), else the defaults."""
    return getattr(model, "sampling_rule", (TEMPERATURE, TOP_P))


def chosen(model, temperature: float | None, top_p: float | None) -> tuple[float, float]:
    """The rule a call samples by: what it names, the model's run's rule for the rest."""
    run_temperature, run_top_p = run_rule(model)
    return (run_temperature if temperature is None else temperature,
            run_top_p if top_p is None else top_p)
