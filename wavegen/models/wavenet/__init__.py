"""The WaveNet family: the model, the torch streaming engine, the compiled CPU loop, the
sampling engines over both, and the adapter that the generic modules reach them through."""
