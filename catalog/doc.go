// Package catalog owns condamesh's replicated metadata: channels, packages,
// package versions, users, API keys, memberships, jobs and tasks. It turns
// Raft commands into store batches (Apply, deterministic: it reads only the
// store and the command, and takes time from the command) and answers the
// read queries of the API. It knows nothing of Raft, HTTP or conda archives.
//
// Keys under store.ReplicatedPrefix ("m/"):
//
//	m/ch/<channel>                       Channel (channel = lower-cased name)
//	m/pkg/<channel>/<name>               Package
//	m/ver/<channel>/<subdir>/<filename>  PackageVersion
//	m/gen/<channel>/<subdir>             uint64: bumped on every change to the subdir's versions
//	m/chgen/<channel>                    uint64: bumped on every change to the channel
//	m/user/<id>                          User
//	m/uname/<username>                   user id
//	m/key/<stored hash of key>           ApiKey; hash = "hmac1:" + hex(HMAC-SHA256(server
//	                                     secret, SHA-256(key))), see internal/secret. Records of
//	                                     older versions, under the plain SHA-256 hex, are moved
//	                                     to the keyed form by the leader at start
//	                                     (PutApiKeyOp.replaces_hash). The server secret is not
//	                                     in the replicated metadata: it is a file of each node's
//	                                     data directory (api-key-secret), the same on every node.
//	m/mem/<channel>/<user id>            channel Member
//	m/pmem/<channel>/<package>/<user id> package Member
//	m/job/<id, 20 digits>                Job
//	m/task/<job id>/<task id>            Task (ids 20 digits)
//	m/seq/<name>                         uint64 id sequences
//	m/proxy/<channel>/<path>             ProxyEntry: a proxy channel's cached upstream file
//	m/mirror/<channel>/<id>              ChannelMirror registered with a primary channel
//	m/mirrorurl/<url>                    "<channel>/<id>": mirror URLs are unique
//	m/dl/<channel>/<P>/<bucket>/<platform>/<filename>   uint64 downloads; P = H, D, M or Y,
//	                                     bucket = unix seconds of the period start (12 digits)
//	m/dlt/<channel>/<platform>/<filename>              uint64 all-time downloads
//	m/dlm/<mirror id>/<channel>/<hour>/<platform>/<filename>  uint64 downloads pulled from a mirror
//
// Values are protobuf messages of gen/condamesh/v1.
package catalog
