# Unit tests for ig.purpose.
package ig.purpose_test

import data.ig.purpose

request(purpose_name, operation_type) := {
	"tenant": "acme",
	"request": {"method": "POST", "path": "/graphql", "operation_type": operation_type, "purpose": purpose_name},
}

test_granted_purpose_and_operation_allow if {
	purpose.decision == {"allow": true, "reasons": []} with input as request("support", "query")
	purpose.decision == {"allow": true, "reasons": []} with input as request("billing", "mutation")
}

test_operation_outside_the_purpose_is_forbidden if {
	purpose.decision == {"allow": false, "reasons": ["purpose_operation_forbidden"]} with input as request("support", "mutation")
}

test_missing_purpose_is_refused if {
	purpose.decision == {"allow": false, "reasons": ["purpose_missing"]} with input as request(null, "query")
	purpose.decision == {"allow": false, "reasons": ["purpose_missing"]} with input as {"tenant": "acme", "request": {}}
}

test_unknown_purpose_is_refused if {
	purpose.decision == {"allow": false, "reasons": ["purpose_unknown"]} with input as request("marketing", "query")
}

test_purpose_not_granted_to_tenant_is_refused if {
	globex := object.union(request("billing", "query"), {"tenant": "globex"})
	purpose.decision == {"allow": false, "reasons": ["purpose_not_granted"]} with input as globex
}
