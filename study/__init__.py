"""dastudy package: ``config`` < ``state`` < ``run`` | ``report`` < ``view`` < ``commands``/``cli`` (docs/design.md)."""
from study import _moved

_moved.install()  # studies written by the flat layout name their classes by the old module paths
