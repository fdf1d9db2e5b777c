"""Models and their contract: the manifest, the model inputs (shared by training and serving),
training, quantization and registration of models trained elsewhere."""
