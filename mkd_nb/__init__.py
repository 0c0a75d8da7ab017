__version__ = "0.1.0"
# The built-in methods register themselves (core.METHOD_REGISTRY) as their modules load; importing them here
# makes every method known to make_config, build_method and mkd-train after any `import mkd_nb...`.
# Not generated: nbdev only updates the version line above.
from . import methods, mgd
