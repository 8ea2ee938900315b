"""Training a reward model: the arguments, the head-LR Trainer, one builder from a point of the space to (arguments,
model), soup/ensemble and the final stage."""
