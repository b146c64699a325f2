"""Configuration: typed settings (environment, YAML file), the model catalog, secrets masked."""
