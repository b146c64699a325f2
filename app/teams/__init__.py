"""Teams and their keys: who may call, which models, what limits; reloaded from the file."""
