"""The version of the plugin API, and the check of the version a plugin declares it needs."""

import re

from .errors import PluginError

API_VERSION = "1.0"  # MAJOR.MINOR: a minor release only adds to the API, a major one may change or remove parts of it
API_ATTRIBUTE = "TRANSFERLAB_API"  # a plugin module's declaration of the API version it needs, e.g. TRANSFERLAB_API = "1.0"
VERSION = re.compile(r"(\d+)(?:\.(\d+))?")


def check_api(plugin: str, dist: str, module: object, provides: str = API_VERSION) -> None:
    """A PluginError naming the plugin and both versions unless the API it declares it needs (none: any) is provided:
    the same major version, and a minor version no newer than ours."""
    wanted = getattr(module, API_ATTRIBUTE, None)
    if wanted is None:
        return
    match = VERSION.fullmatch(wanted) if isinstance(wanted, str) else None
    if match is None:
        raise PluginError(f"plugin '{plugin}' (distribution {dist}) declares {API_ATTRIBUTE} = {wanted!r}; it must be a version string such as '1' or '1.0'")
    major, minor = int(match[1]), int(match[2] or 0)
    ours_major, ours_minor = map(int, provides.split("."))
    if major != ours_major or minor > ours_minor:
        fix = "upgrade transferlab" if (major, minor) > (ours_major, ours_minor) else "install a version of the plugin made for it"
        raise PluginError(f"plugin '{plugin}' (distribution {dist}) needs transferlab plugin API {wanted}, but this transferlab provides API {provides}: "
                          f"{fix}, or leave the plugin out with TRANSFERLAB_PLUGINS")
