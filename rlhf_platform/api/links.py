"""OpenAPI links: which response gives the id that another operation takes.

Added to the schema by a drf-spectacular postprocessing hook (``SPECTACULAR_SETTINGS``).
They document the API's flow (list or create a campaign, lease its next comparison, answer
the lease) and let schemathesis's stateful testing chain real ids instead of guessing
them (``tests/security/test_api_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

CAMPAIGN_TARGETS = (
    "campaigns_retrieve",
    "campaigns_state",
    "campaigns_members_add",
    "campaigns_prompts_import",
    "campaigns_progress",
    "campaigns_rounds",
    "comparisons_next",
    "campaigns_export_preferences",
    "campaigns_export_labels",
    "campaigns_import_pairs_file",
)
LEASE_TARGETS = ("leases_label", "leases_skip", "leases_renew")

# (operation, status) -> (runtime expression of the id, parameter it fills, targets)
LINKS: dict[tuple[str, str], tuple[str, str, tuple[str, ...]]] = {
    ("campaigns_list", "200"): ("$response.body#/results/0/id", "campaign_id", CAMPAIGN_TARGETS),
    ("campaigns_create", "201"): ("$response.body#/id", "campaign_id", CAMPAIGN_TARGETS),
    ("campaigns_retrieve", "200"): ("$response.body#/id", "campaign_id", CAMPAIGN_TARGETS),
    ("comparisons_next", "200"): ("$response.body#/lease_id", "lease_id", LEASE_TARGETS),
    ("campaigns_rounds", "200"): ("$response.body#/0/id", "round_id", ("rounds_retry",)),
}


def add_links(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for (operation_id, status), (expression, parameter, targets) in LINKS.items():
                response = operation.get("responses", {}).get(status)
                if operation.get("operationId") != operation_id or response is None:
                    continue
                response["links"] = {
                    target: {"operationId": target, "parameters": {parameter: expression}}
                    for target in targets
                }
    return result
