package catalog

import v1 "github.com/condamesh/condamesh/gen/condamesh/v1"

// ProtocolVersion is the highest command version this build applies. A node
// meeting a Raft entry that needs more stops applying the log there (see
// cluster), so that it never diverges from nodes that understood the entry.
//
// Raise it when a build adds an operation, or a field that changes what an
// existing operation does; RequiredVersion then answers the new version for
// commands that use it, and only those.
const ProtocolVersion uint32 = 2

// RequiredVersion is the command version needed to apply cmd: the version
// that introduced its operation (and, later, any field of it that changes
// its meaning when set). It is 0 for a command without an operation this
// build knows. The proposer stamps it into Command.version.
func RequiredVersion(cmd *v1.Command) uint32 {
	switch cmd.GetOp().(type) {
	case nil:
		return 0
	// Version 2: a job write conditional on the job's status.
	case *v1.Command_PutJob:
		if cmd.GetPutJob().GetIfStatus() != "" {
			return 2
		}
		return 1
	// Version 1: the operations of the first release.
	case *v1.Command_CreateChannel, *v1.Command_UpdateChannel, *v1.Command_DeleteChannel,
		*v1.Command_PutVersions, *v1.Command_DeleteVersion, *v1.Command_DeletePackage,
		*v1.Command_CreatePackage, *v1.Command_PutUser, *v1.Command_PutApiKey,
		*v1.Command_SetMember, *v1.Command_PutTask,
		*v1.Command_PutProxyEntries, *v1.Command_PutMirror, *v1.Command_DeleteMirror,
		*v1.Command_AddDownloads, *v1.Command_ClaimJobs:
		return 1
	default:
		// An operation added to command.proto without a version here:
		// TestRequiredVersion fails. Treated as needing a newer build.
		return ProtocolVersion + 1
	}
}
