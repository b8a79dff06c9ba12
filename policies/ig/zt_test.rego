# Unit tests for ig.zt (run by the test suite through ig_gate.bundles.engine.run_rego_tests).
package ig.zt_test

import data.ig.zt

# A low-risk session of tenant acme, from the US, on a managed device, reading.
base := {
	"tenant": "acme",
	"session": {"risk": "low", "acr": "pwd", "auth_age_s": 60, "subject": "alice"},
	"stepup": false,
	"device": {"posture": "managed"},
	"geo": {"country": "US", "anomaly": false},
	"request": {"method": "POST", "path": "/graphql", "operation_type": "query"},
}

allow := {"allow": true, "stepup": false, "deny": false, "reasons": []}

stepup(reasons) := {"allow": false, "stepup": true, "deny": false, "reasons": reasons}

deny(reasons) := {"allow": false, "stepup": false, "deny": true, "reasons": reasons}

with_session(field, value) := object.union(base, {"session": object.union(base.session, {field: value})})

with_posture(posture) := object.union(base, {"device": {"posture": posture}})

with_country(country) := object.union(base, {"geo": {"country": country, "anomaly": false}})

mutation(input_doc) := object.union(input_doc, {"request": {"method": "POST", "path": "/graphql", "operation_type": "mutation"}})

test_low_risk_allows if zt.decision == allow with input as base

test_medium_risk_without_stepup_asks_for_stepup if {
	zt.decision == stepup(["stepup_required"]) with input as with_session("risk", "medium")
}

test_medium_risk_with_stepup_allows if {
	zt.decision == allow with input as object.union(with_session("risk", "medium"), {"stepup": true})
}

test_high_risk_denies_even_after_stepup if {
	zt.decision == deny(["risk_high"]) with input as with_session("risk", "high")
	zt.decision == deny(["risk_high"]) with input as object.union(with_session("risk", "high"), {"stepup": true})
}

test_missing_or_unknown_risk_denies if {
	zt.decision == deny(["risk_unknown"]) with input as with_session("risk", "severe")
	zt.decision == deny(["risk_unknown"]) with input as object.remove(base, ["session"])
}

test_jailbroken_and_untrusted_devices_deny if {
	zt.decision == deny(["device_jailbroken"]) with input as with_posture("jailbroken")
	zt.decision == deny(["device_untrusted"]) with input as with_posture("untrusted")
}

test_unmanaged_and_unknown_devices_may_read if {
	zt.decision == allow with input as with_posture("unmanaged")
	zt.decision == allow with input as with_posture("unknown")
}

test_unmanaged_and_unknown_devices_need_stepup_to_write if {
	zt.decision == stepup(["device_unmanaged_write"]) with input as mutation(with_posture("unmanaged"))
	zt.decision == stepup(["device_unmanaged_write"]) with input as mutation(with_posture("unknown"))
	zt.decision == allow with input as object.union(mutation(with_posture("unknown")), {"stepup": true})
	zt.decision == allow with input as mutation(base)
}

test_writes_without_a_known_posture_need_stepup if {
	zt.decision == stepup(["device_unmanaged_write"]) with input as mutation(with_posture(null))
	zt.decision == stepup(["device_unmanaged_write"]) with input as mutation(object.remove(base, ["device"]))
}

test_non_graphql_unsafe_method_is_a_write if {
	rest := object.union(with_posture("unknown"), {"request": {"method": "DELETE", "path": "/api/x", "operation_type": "unknown"}})
	zt.decision == stepup(["device_unmanaged_write"]) with input as rest
}

test_fenced_country_denies if {
	zt.decision == allow with input as with_country("DE")
	zt.decision == deny(["geo_fenced"]) with input as with_country("FR")
}

test_unknown_country_denies if {
	zt.decision == deny(["geo_unknown"]) with input as with_country(null)
}

test_second_tenant_has_its_own_fence if {
	globex := object.union(base, {"tenant": "globex"})
	zt.decision == deny(["geo_fenced"]) with input as globex
	zt.decision == allow with input as object.union(globex, {"geo": {"country": "FR", "anomaly": false}})
}

test_tenant_requiring_managed_devices_denies_others if {
	globex := object.union(base, {"tenant": "globex", "geo": {"country": "DE", "anomaly": false}})
	zt.decision == deny(["device_unmanaged"]) with input as object.union(globex, {"device": {"posture": "unknown"}})
}

test_tenant_max_auth_age_asks_for_stepup if {
	old := object.union(base, {"tenant": "globex", "geo": {"country": "DE", "anomaly": false}, "session": {"risk": "low", "auth_age_s": 86400}})
	zt.decision == stepup(["auth_too_old"]) with input as old
	zt.decision == allow with input as object.union(old, {"stepup": true})
}

test_unknown_tenant_denies if {
	zt.decision == deny(["unknown_tenant"]) with input as object.union(base, {"tenant": "initrode"})
	zt.decision == deny(["unknown_tenant"]) with input as object.remove(base, ["tenant"])
}

test_geo_anomaly_asks_for_stepup_unless_satisfied if {
	anomaly := object.union(base, {"geo": {"country": "US", "anomaly": true}})
	zt.decision == stepup(["geo_anomaly"]) with input as anomaly
	zt.decision == allow with input as object.union(anomaly, {"stepup": true})
}

test_deny_wins_over_stepup_and_reasons_are_sorted if {
	bad := object.union(base, {"session": {"risk": "high"}, "device": {"posture": "jailbroken"}, "geo": {"country": "FR", "anomaly": true}})
	zt.decision == deny(["device_jailbroken", "geo_fenced", "risk_high"]) with input as bad
}

test_stepup_reasons_accumulate if {
	both := object.union(with_session("risk", "medium"), {"geo": {"country": "US", "anomaly": true}})
	zt.decision == stepup(["geo_anomaly", "stepup_required"]) with input as both
}

test_tenant_requiring_purpose_checks_it if {
	initech := object.union(base, {"tenant": "initech"})
	zt.decision == deny(["purpose_denied"]) with input as initech
	zt.decision == allow with input as object.union(initech, {"request": {"method": "POST", "operation_type": "query", "purpose": "support"}})
}

test_fences_come_from_data if {
	zt.decision == deny(["geo_fenced"]) with input as base with data.tenants.acme.allowed_countries as ["DE"]
}
