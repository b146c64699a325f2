"""Inputs: wire input parsed into Items and checked against the model; params; token ids; media."""
