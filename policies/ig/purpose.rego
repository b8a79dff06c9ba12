# Purpose-of-use check: the caller declares why it accesses data (input.request.purpose, e.g. from an
# `X-Purpose` header); the purpose must exist, be granted to the tenant, and permit the operation type.
#
# Data: data.purposes[purpose].operation_types, data.tenants[tenant].purposes
# Output: decision = {allow, reasons} with reasons sorted; allow is true exactly when reasons is empty.
package ig.purpose

purpose := input.request.purpose if is_string(input.request.purpose)

known := data.purposes[purpose]

deny_reasons contains "purpose_missing" if not purpose

deny_reasons contains "purpose_unknown" if {
	purpose
	not known
}

deny_reasons contains "purpose_not_granted" if {
	known
	not purpose in data.tenants[input.tenant].purposes
}

deny_reasons contains "purpose_operation_forbidden" if {
	known
	not input.request.operation_type in known.operation_types
}

decision := {"allow": count(deny_reasons) == 0, "reasons": sort(deny_reasons)}
