"""wavegen: WaveNet-style autoregressive audio models.

Train on a folder of audio, generate with a cached incremental sampler, and score clips
with their exact log-likelihood.
"""

from .checkpoint import load_checkpoint
from .model import WaveNet
from .sampler import generate
from .scoring import score_audio, score_file

__all__ = ["WaveNet", "generate", "load_checkpoint", "score_audio", "score_file"]
__version__ = "0.1.0"
