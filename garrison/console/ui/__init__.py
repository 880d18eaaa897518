"""Web UI served by the console; the console mounts `router` at '/'.

Pages are server-rendered shells (layout, navigation, empty states) and a small hand-written script
fills them from the same REST API operators script against (/api/v1, bearer token from
`POST /api/v1/authenticate`). The UI therefore has no privileges of its own: what an auditor cannot
do through the API, the UI cannot do either; hiding edit controls is only a courtesy.
"""

from garrison.console.ui.routes import router

__all__ = ["router"]
