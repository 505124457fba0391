package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Result is what a successfully applied command returns to its proposer.
type Result struct {
	JobID  int64 // PutJobOp: the job's id
	TaskID int64 // PutTaskOp: the task's id
}

// Apply applies one command at Raft index. It is deterministic: the same
// store state and command always give the same writes and result. A command
// that cannot be applied returns an error and writes nothing but the applied
// index. Indexes at or below the applied index are skipped (replay).
func (c *Catalog) Apply(ctx context.Context, index uint64, cmd *v1.Command) (*Result, error) {
	applied, err := c.st.AppliedIndex(ctx)
	if err != nil {
		return nil, err
	}
	if index != 0 && index <= applied {
		return &Result{}, nil
	}
	if res, opErr, ok := c.repeated(ctx, cmd); ok {
		// A retried forward of a command applied before: answer its
		// result again, change nothing but the applied index.
		if err := c.st.ApplyBatch(ctx, index, c.st.NewBatch()); err != nil {
			return nil, err
		}
		return res, opErr
	}
	b := c.st.NewBatch()
	a := &applier{ctx: ctx, b: b, now: time.Unix(0, cmd.GetTimeUnixNano()).UTC(), index: index, changed: map[string]bool{}, bumped: map[string]bool{}}
	res, opErr := a.apply(cmd)
	if opErr != nil {
		// Record the index (and the request id's result) alone, so a
		// replay skips this entry too.
		b.Close()
		b = c.st.NewBatch()
		a.b, a.changed = b, nil
	}
	if err := a.remember(cmd, res, opErr); err != nil {
		b.Close()
		return nil, err
	}
	err = c.st.ApplyBatch(ctx, index, b)
	c.Invalidate()
	if err != nil {
		return nil, err
	}
	if c.onChange != nil {
		for ch := range a.changed {
			c.onChange(ch)
		}
	}
	return res, opErr
}

type applier struct {
	ctx     context.Context
	b       *store.Batch
	now     time.Time
	index   uint64          // the command's Raft index
	changed map[string]bool // channels whose published indexes may change
	bumped  map[string]bool // generation keys already bumped by this command
}

// errMissing reports a command without the message its operation needs.
func errMissing(what string) error { return fmt.Errorf("%w: %s is missing", ErrInvalid, what) }

func (a *applier) apply(cmd *v1.Command) (*Result, error) {
	if err := validate(cmd); err != nil {
		return nil, err
	}
	if err := a.fence(cmd); err != nil {
		return nil, err
	}
	switch op := cmd.GetOp().(type) {
	case *v1.Command_ClaimJobs:
		return nil, a.b.Set(kJobsTerm(), putU64(max(op.ClaimJobs.GetTerm(), a.jobsTerm())))
	case *v1.Command_CreateChannel:
		return nil, a.createChannel(op.CreateChannel)
	case *v1.Command_UpdateChannel:
		return nil, a.updateChannel(op.UpdateChannel)
	case *v1.Command_DeleteChannel:
		return nil, a.deleteChannel(op.DeleteChannel)
	case *v1.Command_PutVersions:
		return nil, a.putVersions(op.PutVersions)
	case *v1.Command_DeleteVersion:
		return nil, a.deleteVersion(op.DeleteVersion)
	case *v1.Command_DeletePackage:
		return nil, a.deletePackage(op.DeletePackage)
	case *v1.Command_CreatePackage:
		return nil, a.createPackage(op.CreatePackage)
	case *v1.Command_PutUser:
		return nil, a.putUser(op.PutUser.GetUser())
	case *v1.Command_PutApiKey:
		return nil, a.putAPIKey(op.PutApiKey)
	case *v1.Command_SetMember:
		return nil, a.setMember(op.SetMember)
	case *v1.Command_PutJob:
		return a.putJob(op.PutJob.GetJob(), op.PutJob.GetIfStatus())
	case *v1.Command_PutTask:
		return a.putTask(op.PutTask.GetTask())
	case *v1.Command_PutProxyEntries:
		for _, e := range op.PutProxyEntries.GetEntries() {
			if err := a.putProxyEntry(e); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case *v1.Command_PutMirror:
		return nil, a.putMirror(op.PutMirror.GetMirror())
	case *v1.Command_DeleteMirror:
		return nil, a.deleteMirror(op.DeleteMirror)
	case *v1.Command_AddDownloads:
		return nil, a.addDownloads(op.AddDownloads)
	default:
		return nil, fmt.Errorf("%w: unknown operation %T", ErrInvalid, op)
	}
}

func (a *applier) get(key []byte, m proto.Message) error {
	v, err := a.b.Get(key)
	return decode(key, v, err, m)
}

func (a *applier) exists(key []byte) bool {
	_, err := a.b.Get(key)
	return err == nil
}

func (a *applier) put(key []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("catalog: marshal: %w", err)
	}
	return a.b.Set(key, v)
}

func (a *applier) bump(key []byte) error {
	v, _ := a.b.Get(key)
	return a.b.Set(key, putU64(u64(v)+1))
}

// touch records a change to a channel (and one of its subdirs): the
// generations are bumped once per command, however many versions it
// changes, since readers only compare them.
func (a *applier) touch(ch, subdir string) error {
	a.changed[ChannelKey(ch)] = true
	keys := [2][]byte{kChGen(ch)}
	if subdir != "" {
		keys[1] = kGen(ch, subdir)
	}
	for _, k := range keys {
		if k == nil || a.bumped[string(k)] {
			continue
		}
		a.bumped[string(k)] = true
		if err := a.bump(k); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) createChannel(op *v1.CreateChannelOp) error {
	ch := op.GetChannel()
	if ch.GetName() == "" {
		return fmt.Errorf("%w: channel name is empty", ErrInvalid)
	}
	if a.exists(kChannel(ch.Name)) {
		return fmt.Errorf("%w: channel %s", ErrExists, ch.Name)
	}
	ch = proto.Clone(ch).(*v1.Channel)
	ch.CreatedUnix, ch.CreatedIndex = a.now.Unix(), a.index
	ch.Size = 0
	if err := a.put(kChannel(ch.Name), ch); err != nil {
		return err
	}
	if op.GetOwnerId() != "" {
		m := &v1.Member{Channel: ch.Name, UserId: op.OwnerId, Role: "owner"}
		if err := a.put(kMember(ch.Name, op.OwnerId), m); err != nil {
			return err
		}
	}
	if ch.GetMirrorMode() != "proxy" {
		return a.touch(ch.Name, "noarch")
	}
	return a.touch(ch.Name, "")
}

func (a *applier) updateChannel(op *v1.UpdateChannelOp) error {
	ch := op.GetChannel()
	var cur v1.Channel
	if err := a.get(kChannel(ch.GetName()), &cur); err != nil {
		return err
	}
	next := proto.Clone(ch).(*v1.Channel)
	if len(op.GetFields()) > 0 {
		next = proto.Clone(&cur).(*v1.Channel)
		if err := setFields(next, ch, op.GetFields()); err != nil {
			return err
		}
	}
	next.Name, next.Size, next.CreatedUnix, next.CreatedIndex = cur.Name, cur.Size, cur.CreatedUnix, cur.CreatedIndex
	if err := a.put(kChannel(cur.Name), next); err != nil {
		return err
	}
	return a.touch(cur.Name, "")
}

// setFields copies the named fields (a field of dst's type, or
// "field.subfield" of a message field) from src to dst; a field src does
// not have is cleared.
func setFields(dst, src proto.Message, fields []string) error {
	src = proto.Clone(src) // dst shares what it takes from src
	for _, f := range fields {
		d, s := dst.ProtoReflect(), src.ProtoReflect()
		path := strings.Split(f, ".")
		for len(path) > 1 {
			fd := d.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
			if fd == nil || fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return fmt.Errorf("%w: update of field %q: %s has no fields", ErrInvalid, f, path[0])
			}
			d, s = d.Mutable(fd).Message(), s.Get(fd).Message()
			path = path[1:]
		}
		fd := d.Descriptor().Fields().ByName(protoreflect.Name(path[0]))
		if fd == nil {
			return fmt.Errorf("%w: update of unknown field %q", ErrInvalid, f)
		}
		if s.Has(fd) {
			d.Set(fd, s.Get(fd))
		} else {
			d.Clear(fd)
		}
	}
	return nil
}

func (a *applier) deleteChannel(op *v1.DeleteChannelOp) error {
	if !a.exists(kChannel(op.GetName())) {
		return fmt.Errorf("%w: channel %s", ErrNotFound, op.GetName())
	}
	mirrors, err := scanAll[v1.ChannelMirror](a, kMirrors(op.Name))
	if err != nil {
		return err
	}
	for _, m := range mirrors {
		if err := a.b.Delete(kMirrorURL(m.Url)); err != nil {
			return err
		}
	}
	for _, p := range [][]byte{kPackages(op.Name), kVersions(op.Name), kGens(op.Name), kMembers(op.Name), kPkgMembersAll(op.Name), kProxies(op.Name), kMirrors(op.Name), kDownloadsAll(op.Name), kDownloadTotals(op.Name)} {
		if err := a.b.DeletePrefix(p); err != nil {
			return err
		}
	}
	if err := a.b.Delete(kChannel(op.Name)); err != nil {
		return err
	}
	return a.touch(op.Name, "")
}

func (a *applier) putVersions(op *v1.PutVersionsOp) error {
	sizes := map[string]int64{} // channel -> delta
	chans := map[string]*v1.Channel{}
	pkgs := map[string]*v1.Package{} // package key -> record, written once at the end
	var pkgOrder []string
	vs := op.GetVersions()
	olds, pkgVals, err := a.prefetchVersions(vs)
	if err != nil {
		return err
	}
	type prior struct{ size, created int64 }
	mine := map[string]prior{} // versions written by this command (a batch may name a file twice)
	for i, v := range vs {
		if incompleteVersion(v) {
			return fmt.Errorf("%w: package version lacks channel, platform, filename or package", ErrInvalid)
		}
		ck := ChannelKey(v.Channel)
		if chans[ck] == nil {
			var ch v1.Channel
			if err := a.get(kChannel(v.Channel), &ch); err != nil {
				return fmt.Errorf("channel %s: %w", v.Channel, err)
			}
			chans[ck] = &ch
		}
		ch := chans[ck]
		vk := kVersion(ch.Name, v.Platform, v.Filename)
		old, exists := mine[string(vk)]
		if !exists && olds[i] != nil {
			var o v1.PackageVersion
			if err := decode(vk, olds[i], nil, &o); err != nil {
				return err
			}
			old, exists = prior{o.Size, o.CreatedUnix}, true
		}
		if exists && !op.Force {
			return fmt.Errorf("%w: %s", ErrExists, v.Filename)
		}
		if exists {
			sizes[ck] -= old.size
		}
		nv := proto.Clone(v).(*v1.PackageVersion)
		nv.Channel = ch.Name
		nv.ModifiedUnix = a.now.Unix()
		nv.CreatedUnix = a.now.Unix()
		if exists {
			nv.CreatedUnix = old.created
		}
		sizes[ck] += v.Size
		if err := a.put(vk, nv); err != nil {
			return err
		}
		mine[string(vk)] = prior{nv.Size, nv.CreatedUnix}
		pk := string(kPackage(ch.Name, v.Package))
		p := pkgs[pk]
		if p == nil {
			if p, err = a.loadPackage(ch.Name, v.Package, op.GetOwnerId(), pkgVals[pk]); err != nil {
				return err
			}
			pkgs[pk] = p
			pkgOrder = append(pkgOrder, pk)
		}
		addToPackage(p, v)
		if err := a.touch(ch.Name, v.Platform); err != nil {
			return err
		}
	}
	for _, pk := range pkgOrder {
		if err := a.put([]byte(pk), pkgs[pk]); err != nil {
			return err
		}
	}
	for ck, ch := range chans {
		ch.Size += sizes[ck]
		if ch.SizeLimit != nil && sizes[ck] > 0 && ch.Size > ch.GetSizeLimit() {
			return fmt.Errorf("%w: %s is above quota of %d bytes", ErrQuota, ch.Name, ch.GetSizeLimit())
		}
		if err := a.put(kChannel(ch.Name), ch); err != nil {
			return err
		}
	}
	return nil
}

// incompleteVersion tells a version that lacks what names it.
func incompleteVersion(v *v1.PackageVersion) bool {
	return v.GetChannel() == "" || v.GetPlatform() == "" || v.GetFilename() == "" || v.GetPackage() == ""
}

// prefetchVersions reads, before putVersions writes anything, each
// version's current record (olds[i], nil if none) and each named package's
// (by package key; absent if none), with one sorted pass per kind
// (store.Batch.GetMany) instead of a lookup per record: the lookups were
// 40 % of applying a mirror sync's batch of new records, on every node.
func (a *applier) prefetchVersions(vs []*v1.PackageVersion) (olds [][]byte, pkgs map[string][]byte, err error) {
	vkeys := make([][]byte, len(vs))
	var pkeys [][]byte
	seen := map[string]bool{}
	for i, v := range vs {
		if incompleteVersion(v) {
			continue // putVersions refuses it when it gets there
		}
		vkeys[i] = kVersion(v.Channel, v.Platform, v.Filename)
		if pk := kPackage(v.Channel, v.Package); !seen[string(pk)] {
			seen[string(pk)] = true
			pkeys = append(pkeys, pk)
		}
	}
	if olds, err = a.b.GetMany(vkeys); err != nil {
		return nil, nil, err
	}
	pv, err := a.b.GetMany(pkeys)
	if err != nil {
		return nil, nil, err
	}
	pkgs = make(map[string][]byte, len(pkeys))
	for i, k := range pkeys {
		if pv[i] != nil {
			pkgs[string(k)] = pv[i]
		}
	}
	return olds, pkgs, nil
}

// loadPackage decodes a channel's package record (cur, as prefetched; nil
// if the channel has none) or makes a new one, with the uploader as its
// owner.
func (a *applier) loadPackage(ch, name, owner string, cur []byte) (*v1.Package, error) {
	var p v1.Package
	if cur == nil {
		p = v1.Package{Channel: ch, Name: name, CreatedUnix: a.now.Unix()}
		if owner != "" {
			if err := a.put(kPkgMember(ch, name, owner), &v1.Member{Channel: ch, Package: name, UserId: owner, Role: "owner"}); err != nil {
				return nil, err
			}
		}
	} else if err := decode(kPackage(ch, name), cur, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// addToPackage records a version's platform and about data on its package.
func addToPackage(p *v1.Package, v *v1.PackageVersion) {
	if !slices.Contains(p.Platforms, v.Platform) {
		p.Platforms = append(p.Platforms, v.Platform)
	}
	if len(v.AboutJson) > 0 {
		p.Summary, p.Description, p.Url = aboutFields(v.AboutJson)
	}
}

func (a *applier) deleteVersion(op *v1.DeleteVersionOp) error {
	var ch v1.Channel
	if err := a.get(kChannel(op.GetChannel()), &ch); err != nil {
		return err
	}
	var old v1.PackageVersion
	if err := a.get(kVersion(op.Channel, op.Platform, op.Filename), &old); err != nil {
		return err
	}
	if err := a.b.Delete(kVersion(op.Channel, op.Platform, op.Filename)); err != nil {
		return err
	}
	ch.Size -= old.Size
	if err := a.put(kChannel(ch.Name), &ch); err != nil {
		return err
	}
	return a.touch(ch.Name, op.Platform)
}

func (a *applier) deletePackage(op *v1.DeletePackageOp) error {
	var ch v1.Channel
	if err := a.get(kChannel(op.GetChannel()), &ch); err != nil {
		return err
	}
	if !a.exists(kPackage(op.Channel, op.Name)) {
		return fmt.Errorf("%w: package %s/%s", ErrNotFound, op.Channel, op.Name)
	}
	var doomed []*v1.PackageVersion
	err := a.b.Scan(a.ctx, kVersions(op.Channel), func(_, val []byte) error {
		var v v1.PackageVersion
		if err := proto.Unmarshal(val, &v); err != nil {
			return err
		}
		if v.Package == op.Name {
			doomed = append(doomed, &v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range doomed {
		if err := a.b.Delete(kVersion(op.Channel, v.Platform, v.Filename)); err != nil {
			return err
		}
		ch.Size -= v.Size
		if err := a.touch(ch.Name, v.Platform); err != nil {
			return err
		}
	}
	if err := a.b.Delete(kPackage(op.Channel, op.Name)); err != nil {
		return err
	}
	if err := a.b.DeletePrefix(kPkgMembers(op.Channel, op.Name)); err != nil {
		return err
	}
	if err := a.put(kChannel(ch.Name), &ch); err != nil {
		return err
	}
	return a.touch(ch.Name, "")
}

func (a *applier) createPackage(op *v1.CreatePackageOp) error {
	p := op.GetPackage()
	var ch v1.Channel
	if err := a.get(kChannel(p.GetChannel()), &ch); err != nil {
		return err
	}
	if a.exists(kPackage(p.Channel, p.Name)) {
		return fmt.Errorf("%w: package %s/%s", ErrExists, ch.Name, p.Name)
	}
	np := proto.Clone(p).(*v1.Package)
	np.Channel, np.CreatedUnix = ch.Name, a.now.Unix()
	if err := a.put(kPackage(ch.Name, p.Name), np); err != nil {
		return err
	}
	if op.GetOwnerId() != "" {
		if err := a.put(kPkgMember(ch.Name, p.Name, op.OwnerId), &v1.Member{Channel: ch.Name, Package: p.Name, UserId: op.OwnerId, Role: "owner"}); err != nil {
			return err
		}
	}
	return a.touch(ch.Name, "")
}

func (a *applier) putUser(u *v1.User) error {
	if u.GetId() == "" {
		return fmt.Errorf("%w: user id is empty", ErrInvalid)
	}
	var cur v1.User
	if err := a.get(kUser(u.Id), &cur); err == nil && cur.Role == "owner" && u.Role != "owner" {
		if err := a.keepAnOwner(u.Id); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if u.Username != "" {
		if v, err := a.b.Get(kUsername(u.Username)); err == nil && string(v) != u.Id {
			return fmt.Errorf("%w: user %s", ErrExists, u.Username)
		}
		if err := a.b.Set(kUsername(u.Username), []byte(u.Id)); err != nil {
			return err
		}
	}
	return a.put(kUser(u.Id), u)
}

// keepAnOwner refuses a change that takes the server role owner from the
// user id when no other user holds it. Checked here, in the replicated
// apply, so two concurrent demotions cannot both pass.
func (a *applier) keepAnOwner(id string) error {
	others := false
	err := a.b.Scan(a.ctx, []byte("m/user/"), func(_, val []byte) error {
		var u v1.User
		if err := proto.Unmarshal(val, &u); err != nil {
			return fmt.Errorf("catalog: corrupt user: %w", err)
		}
		others = others || (u.Role == "owner" && u.Id != id)
		return nil
	})
	if err != nil {
		return err
	}
	if !others {
		return ErrLastOwner
	}
	return nil
}

func (a *applier) putAPIKey(op *v1.PutApiKeyOp) error {
	k := op.GetKey()
	if k.GetKeyHash() == "" || k.GetUserId() == "" {
		return fmt.Errorf("%w: api key lacks hash or user", ErrInvalid)
	}
	if op.AnonymousUser != nil {
		if err := a.putUser(op.AnonymousUser); err != nil {
			return err
		}
	}
	nk := proto.Clone(k).(*v1.ApiKey)
	if nk.CreatedUnix == 0 {
		nk.CreatedUnix = a.now.Unix()
	}
	if old := op.GetReplacesHash(); old != "" {
		// A stored hash moves to a new scheme: the old record goes in the
		// same batch, and a second migration of the same key is refused.
		if old == k.KeyHash || !a.exists(kKey(old)) {
			return fmt.Errorf("%w: api key record to replace", ErrNotFound)
		}
		if a.exists(kKey(k.KeyHash)) {
			return fmt.Errorf("%w: api key", ErrExists)
		}
		if err := a.b.Delete(kKey(old)); err != nil {
			return err
		}
	}
	return a.put(kKey(k.KeyHash), nk)
}

func (a *applier) setMember(op *v1.SetMemberOp) error {
	m := op.GetMember()
	var ch v1.Channel
	if err := a.get(kChannel(m.GetChannel()), &ch); err != nil {
		return err
	}
	if !a.exists(kUser(m.GetUserId())) {
		return fmt.Errorf("%w: user %s", ErrNotFound, m.GetUserId())
	}
	key := kMember(ch.Name, m.UserId)
	if m.Package != "" {
		if !a.exists(kPackage(ch.Name, m.Package)) {
			return fmt.Errorf("%w: package %s/%s", ErrNotFound, ch.Name, m.Package)
		}
		key = kPkgMember(ch.Name, m.Package, m.UserId)
	}
	if op.Remove {
		if !a.exists(key) {
			return fmt.Errorf("%w: membership", ErrNotFound)
		}
		return a.b.Delete(key)
	}
	nm := proto.Clone(m).(*v1.Member)
	nm.Channel = ch.Name
	return a.put(key, nm)
}

func (a *applier) nextID(seq string) (int64, error) {
	v, _ := a.b.Get(kSeq(seq))
	id := u64(v) + 1
	return int64(id), a.b.Set(kSeq(seq), putU64(id))
}

func (a *applier) putJob(j *v1.Job, ifStatus string) (*Result, error) {
	j = proto.Clone(j).(*v1.Job)
	if j.Id == 0 && ifStatus != "" {
		return nil, fmt.Errorf("%w: a new job with an expected status", ErrInvalid)
	}
	if j.Id == 0 {
		id, err := a.nextID("job")
		if err != nil {
			return nil, err
		}
		j.Id, j.CreatedUnix = id, a.now.Unix()
	} else {
		var old v1.Job
		if err := a.get(kJob(j.Id), &old); err != nil {
			return nil, fmt.Errorf("job %d: %w", j.Id, err)
		}
		if ifStatus != "" && old.Status != ifStatus {
			return nil, fmt.Errorf("%w: job %d is %s, not %s", ErrStatusChanged, j.Id, old.Status, ifStatus)
		}
		j.CreatedUnix = old.CreatedUnix
	}
	return &Result{JobID: j.Id}, a.put(kJob(j.Id), j)
}

func (a *applier) putTask(t *v1.Task) (*Result, error) {
	t = proto.Clone(t).(*v1.Task)
	if !a.exists(kJob(t.GetJobId())) {
		return nil, fmt.Errorf("%w: job %d", ErrNotFound, t.GetJobId())
	}
	if t.Id == 0 {
		id, err := a.nextID("task")
		if err != nil {
			return nil, err
		}
		t.Id, t.CreatedUnix = id, a.now.Unix()
	} else {
		var old v1.Task
		if err := a.get(kTask(t.JobId, t.Id), &old); err != nil {
			return nil, err
		}
		t.CreatedUnix = old.CreatedUnix
	}
	return &Result{TaskID: t.Id}, a.put(kTask(t.JobId, t.Id), t)
}

// validate rejects commands whose required parts are absent, so that Apply
// never dereferences a nil message from an untrusted log entry.
func validate(cmd *v1.Command) error {
	if len(cmd.GetRequestId()) > maxRequestID {
		return fmt.Errorf("%w: request id of %d bytes (at most %d)", ErrInvalid, len(cmd.GetRequestId()), maxRequestID)
	}
	switch op := cmd.GetOp().(type) {
	case *v1.Command_CreateChannel:
		if op.CreateChannel.GetChannel() == nil {
			return errMissing("channel")
		}
	case *v1.Command_UpdateChannel:
		if op.UpdateChannel.GetChannel() == nil {
			return errMissing("channel")
		}
	case *v1.Command_PutVersions:
		for _, v := range op.PutVersions.GetVersions() {
			if v == nil {
				return errMissing("package version")
			}
		}
	case *v1.Command_CreatePackage:
		if op.CreatePackage.GetPackage() == nil {
			return errMissing("package")
		}
	case *v1.Command_PutUser:
		if op.PutUser.GetUser() == nil {
			return errMissing("user")
		}
	case *v1.Command_PutApiKey:
		if op.PutApiKey.GetKey() == nil {
			return errMissing("api key")
		}
	case *v1.Command_SetMember:
		if op.SetMember.GetMember() == nil {
			return errMissing("member")
		}
	case *v1.Command_PutJob:
		if op.PutJob.GetJob() == nil {
			return errMissing("job")
		}
	case *v1.Command_PutTask:
		if op.PutTask.GetTask() == nil {
			return errMissing("task")
		}
	case *v1.Command_PutProxyEntries:
		for _, e := range op.PutProxyEntries.GetEntries() {
			if e == nil {
				return errMissing("proxy entry")
			}
		}
	case *v1.Command_PutMirror:
		if op.PutMirror.GetMirror() == nil {
			return errMissing("mirror")
		}
	case *v1.Command_AddDownloads:
		for _, c := range op.AddDownloads.GetCounts() {
			if c == nil {
				return errMissing("download count")
			}
		}
	case nil:
		return errMissing("operation")
	}
	return nil
}

func (a *applier) putProxyEntry(e *v1.ProxyEntry) error {
	var ch v1.Channel
	if err := a.get(kChannel(e.GetChannel()), &ch); err != nil {
		return fmt.Errorf("channel %s: %w", e.GetChannel(), err)
	}
	if e.Path == "" {
		return fmt.Errorf("%w: proxy entry without a path", ErrInvalid)
	}
	ne := proto.Clone(e).(*v1.ProxyEntry)
	ne.Channel = ch.Name
	return a.put(kProxy(ch.Name, e.Path), ne)
}

// scanAll decodes every record under prefix as the batch sees it.
func scanAll[T any, P interface {
	*T
	proto.Message
}](a *applier, prefix []byte) ([]P, error) {
	var out []P
	err := a.b.Scan(a.ctx, prefix, func(_, v []byte) error {
		m := P(new(T))
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("catalog: corrupt record under %q: %w", prefix, err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

func (a *applier) putMirror(m *v1.ChannelMirror) error {
	var ch v1.Channel
	if err := a.get(kChannel(m.GetChannel()), &ch); err != nil {
		return fmt.Errorf("channel %s: %w", m.GetChannel(), err)
	}
	if m.Id == "" || m.Url == "" {
		return fmt.Errorf("%w: mirror without id or url", ErrInvalid)
	}
	if owner, err := a.b.Get(kMirrorURL(m.Url)); err == nil && string(owner) != ChannelKey(ch.Name)+"/"+m.Id {
		return fmt.Errorf("%w: mirror %s", ErrExists, m.Url)
	}
	nm := proto.Clone(m).(*v1.ChannelMirror)
	nm.Channel = ch.Name
	if err := a.b.Set(kMirrorURL(m.Url), []byte(ChannelKey(ch.Name)+"/"+m.Id)); err != nil {
		return err
	}
	return a.put(kMirror(ch.Name, m.Id), nm)
}

func (a *applier) deleteMirror(op *v1.DeleteMirrorOp) error {
	var m v1.ChannelMirror
	err := a.get(kMirror(op.GetChannel(), op.GetId()), &m)
	if errors.Is(err, ErrNotFound) {
		return nil // deleting an unknown mirror is not an error (Quetz)
	}
	if err != nil {
		return err
	}
	if err := a.b.Delete(kMirrorURL(m.Url)); err != nil {
		return err
	}
	return a.b.Delete(kMirror(op.Channel, op.Id))
}

// PeriodStart returns the start (UTC) of the metric period bucket holding t.
func PeriodStart(period string, t time.Time) time.Time {
	t = t.UTC()
	switch period {
	case "H":
		return t.Truncate(time.Hour)
	case "D":
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case "M":
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	default:
		return time.Date(t.Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	}
}

// Periods are the metric periods, as Quetz names them.
var Periods = []string{"H", "D", "M", "Y"}

func (a *applier) addDownloads(op *v1.AddDownloadsOp) error {
	if op.NodeId != "" {
		// A node's own batch: apply each sequence number once.
		k := kDownloadSeq(op.NodeId)
		last, _ := a.b.Get(k)
		if op.Seq <= u64(last) {
			return nil
		}
		if err := a.b.Set(k, putU64(op.Seq)); err != nil {
			return err
		}
	}
	var mirror v1.ChannelMirror
	if op.MirrorId != "" {
		if err := a.get(kMirror(op.MirrorChannel, op.MirrorId), &mirror); err != nil {
			return fmt.Errorf("mirror %s: %w", op.MirrorId, err)
		}
		if op.CursorUnix <= mirror.LastSynchronisedUnix {
			return nil // these hours were counted already: exactly once
		}
	}
	for _, c := range op.Counts {
		if c.Count <= 0 || c.Platform == "" || c.Filename == "" {
			continue
		}
		if !a.exists(kChannel(c.Channel)) {
			continue // the channel went away
		}
		hour := time.Unix(c.HourUnix, 0)
		for _, p := range Periods {
			if err := a.add(kDownload(c.Channel, p, PeriodStart(p, hour).Unix(), c.Platform, c.Filename), c.Count); err != nil {
				return err
			}
		}
		if err := a.add(kDownloadTotal(c.Channel, c.Platform, c.Filename), c.Count); err != nil {
			return err
		}
		if op.MirrorId != "" {
			if err := a.add(kMirrorDownload(op.MirrorId, c.Channel, c.HourUnix, c.Platform, c.Filename), c.Count); err != nil {
				return err
			}
		}
	}
	if op.MirrorId != "" {
		mirror.LastSynchronisedUnix = op.CursorUnix
		return a.put(kMirror(mirror.Channel, mirror.Id), &mirror)
	}
	return nil
}

func (a *applier) add(key []byte, n int64) error {
	v, _ := a.b.Get(key)
	return a.b.Set(key, putU64(u64(v)+uint64(n)))
}

func (a *applier) jobsTerm() uint64 {
	v, _ := a.b.Get(kJobsTerm())
	return u64(v)
}

// fence refuses a job runner's write (fence_term set) from a term older
// than the one that last claimed the jobs.
func (a *applier) fence(cmd *v1.Command) error {
	if t := cmd.GetFenceTerm(); t != 0 && t < a.jobsTerm() {
		return fmt.Errorf("%w: term %d, jobs claimed in term %d", ErrFenced, t, a.jobsTerm())
	}
	return nil
}
