"""Built-in retinaseg plugins, installed as the package ``retinaseg_plugins`` and loaded through the same
``retinaseg`` entry-point group as third-party plugins."""
