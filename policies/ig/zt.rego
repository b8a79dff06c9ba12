# Zero-trust decision for one request: allow, ask for step-up, or deny.
#
# Input (built by the gate, see DESIGN.md "The request path"):
#   tenant                                   tenant id (string)
#   session.{risk, acr, auth_age_s, subject} risk is "low" | "medium" | "high"
#   stepup                                   true when step-up is already satisfied (strong acr, fresh auth)
#   device.posture                           "managed" | "unmanaged" | "untrusted" | "jailbroken" | "unknown"
#   geo.{country, anomaly}                   ISO country code (or null), impossible-travel flag
#   request.{method, path, operation_type, purpose}
#
# Data: data.tenants[tenant] = {allowed_countries, require_managed_device?, max_auth_age_s?, require_purpose?}
#
# Output: decision = {allow, stepup, deny, reasons}. Exactly one of allow/stepup/deny is true;
# deny wins over stepup, stepup wins over allow. `reasons` is the sorted list of codes behind the
# outcome (deny codes for deny, step-up codes for stepup, empty for allow).
#
# Device posture:
#   jailbroken, untrusted          -> deny, always.
#   unmanaged, unknown (no or bad attestation), or absent -> reads are allowed; writes (GraphQL mutations,
#       or non-safe HTTP methods on non-GraphQL routes) need a managed device or a satisfied step-up;
#       a tenant with `require_managed_device` denies them outright.
# Anything unexpected (unknown tenant, missing or unknown risk, missing country) fails closed (deny).
package ig.zt

tenant := data.tenants[input.tenant]

stepup_satisfied if input.stepup == true

risk_levels := {"low", "medium", "high"}

safe_methods := {"GET", "HEAD", "OPTIONS"}

# A request that changes state: a GraphQL mutation, or a non-safe method outside GraphQL.
write if input.request.operation_type == "mutation"

write if {
	not input.request.operation_type in {"query", "subscription"}
	not input.request.method in safe_methods
}

deny_reasons contains "unknown_tenant" if not tenant

deny_reasons contains "risk_high" if input.session.risk == "high"

deny_reasons contains "risk_unknown" if not input.session.risk in risk_levels

deny_reasons contains "device_jailbroken" if input.device.posture == "jailbroken"

deny_reasons contains "device_untrusted" if input.device.posture == "untrusted"

deny_reasons contains "device_unmanaged" if {
	tenant.require_managed_device == true
	not input.device.posture == "managed"
}

deny_reasons contains "geo_unknown" if {
	tenant
	not is_string(input.geo.country)
}

deny_reasons contains "geo_fenced" if {
	tenant
	is_string(input.geo.country)
	not input.geo.country in tenant.allowed_countries
}

deny_reasons contains "purpose_denied" if {
	tenant.require_purpose == true
	not data.ig.purpose.decision.allow
}

stepup_reasons contains "stepup_required" if {
	input.session.risk == "medium"
	not stepup_satisfied
}

stepup_reasons contains "geo_anomaly" if {
	input.geo.anomaly == true
	not stepup_satisfied
}

stepup_reasons contains "device_unmanaged_write" if {
	write
	not input.device.posture == "managed"
	not stepup_satisfied
}

stepup_reasons contains "auth_too_old" if {
	input.session.auth_age_s > tenant.max_auth_age_s
	not stepup_satisfied
}

decision := {"allow": false, "stepup": false, "deny": true, "reasons": sort(deny_reasons)} if {
	count(deny_reasons) > 0
} else := {"allow": false, "stepup": true, "deny": false, "reasons": sort(stepup_reasons)} if {
	count(stepup_reasons) > 0
} else := {"allow": true, "stepup": false, "deny": false, "reasons": []}
