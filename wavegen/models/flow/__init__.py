"""The flow family: NICE (additive) and RealNVP (affine) coupling layers over squeezed
frames of the mu-law companded waveform, scored with the dequantization bound on the same
class grid as WaveNet, sampled in parallel."""
