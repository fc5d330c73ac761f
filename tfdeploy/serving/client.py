"""Deprecated: moved to ``tfdeploy.client`` (outside the server package, which now holds only
what a server runs). This alias keeps old imports working for one release."""

import warnings

from tfdeploy.client import *  # noqa: F401,F403

warnings.warn("tfdeploy.serving.client moved to tfdeploy.client; import it from there (this alias "
              "goes away in the next release).", DeprecationWarning, stacklevel=2)
