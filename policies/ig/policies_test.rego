# Unit tests for the named @policy policies.
package ig.policies_test

import data.ig.policies

base := {
	"tenant": "acme",
	"session": {"risk": "low", "acr": "mfa", "auth_age_s": 60, "subject": "alice"},
	"stepup": true,
	"device": {"posture": "managed"},
	"geo": {"country": "US", "anomaly": false},
	"request": {"method": "POST", "path": "/graphql", "operation_type": "query"},
}

test_read_profile_follows_the_zero_trust_decision if {
	policies.read_profile with input as base
	not policies.read_profile with input as object.union(base, {"session": {"risk": "high"}})
}

test_admin_needs_listed_subject_managed_device_and_stepup if {
	policies.admin with input as base
	not policies.admin with input as object.union(base, {"session": {"subject": "bob"}})
	not policies.admin with input as object.union(base, {"stepup": false})
	not policies.admin with input as object.union(base, {"device": {"posture": "unmanaged"}})
}

test_billing_needs_the_billing_purpose if {
	policies.billing with input as object.union(base, {"request": {"purpose": "billing"}})
	not policies.billing with input as object.union(base, {"request": {"purpose": "support"}})
	not policies.billing with input as base
}

test_named_policies_are_false_not_undefined_when_refused if {
	denied := object.union(base, {"device": {"posture": "jailbroken"}})
	policies.read_profile == false with input as denied
	policies.admin == false with input as denied
	policies.billing == false with input as denied
}
