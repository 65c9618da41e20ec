"""``GET /v1/admin/pipeline``: the health of Depot's messaging, for operators and the console's Operations view."""
