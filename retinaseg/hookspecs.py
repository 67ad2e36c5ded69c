"""Hook specifications: what a retinaseg plugin may implement.

A plugin is a module (or object) exposed under the ``retinaseg`` entry-point group, e.g. in setup.cfg::

    [options.entry_points]
    retinaseg =
        my_models = my_package.models

and implementing one or more of the hooks below, decorated with ``retinaseg.hookimpl``.
"""
import pluggy

hookspec = pluggy.HookspecMarker("retinaseg")
hookimpl = pluggy.HookimplMarker("retinaseg")


@hookspec
def register_models(register):
    """Register segmentation models.

    Call ``register(ModelSpec(...))`` once per model. The spec declares how to build the network, how many
    classes it predicts, the working scale it was trained at and its input normalisation; the shared runner
    and training engine do the rest.
    """


@hookspec
def register_losses(register):
    """Register training losses.

    Call ``register(LossSpec(name, build, description))``. ``build(**options)`` returns a callable
    ``loss(logits, target, fov) -> scalar tensor`` that only counts pixels inside the field of view.
    """


@hookspec
def register_datasets(register):
    """Register datasets: readers of a public layout on disk.

    Call ``register(DatasetSpec(...))``. A dataset lists its samples (photo, label, optional FOV mask) for a
    split and decodes its labels; the training engine and ``retinaseg eval`` do the rest.
    """
