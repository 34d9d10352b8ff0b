"""What runs on an edge node: the ONNX Runtime predictor, the node agent that pulls its assigned
version and uploads what it predicted, and the Flower client. It imports nothing of driftpilot but
model artifacts, so that a node installs onnxruntime and little else."""
