"""The built-in plugins' torch code, imported when a model is built or a loss is made, never when plugins are listed."""
