# Named policies for Apollo's @policy directive: the sidecar evaluates data.ig.policies[name] with the
# same input as data.ig.zt.decision and grants the policy when the result is true. Every policy
# requires the zero-trust decision to allow the request first. Unknown names are undefined (denied).
package ig.policies

zt_allowed if data.ig.zt.decision.allow == true

# Read one's own profile.
default read_profile := false

read_profile if zt_allowed

# Administrative operations: a listed tenant admin on a managed device with step-up satisfied.
default admin := false

admin if {
	zt_allowed
	input.session.subject in data.ig.zt.tenant.admins
	input.device.posture == "managed"
	input.stepup == true
}

# Billing data: only under the declared "billing" purpose, and the purpose check must pass.
default billing := false

billing if {
	zt_allowed
	input.request.purpose == "billing"
	data.ig.purpose.decision.allow == true
}
