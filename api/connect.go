package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
)

// rpc implements the Connect services on the same operations as REST.
type rpc struct{ s *Server }

var (
	_ condameshv1connect.ChannelServiceHandler = rpc{}
	_ condameshv1connect.PackageServiceHandler = rpc{}
	_ condameshv1connect.KeyServiceHandler     = rpc{}
)

func (s *Server) connectRoutes() {
	r := rpc{s}
	opts := connectOptions()
	for _, reg := range []func() (string, http.Handler){
		func() (string, http.Handler) { return condameshv1connect.NewChannelServiceHandler(r, opts...) },
		func() (string, http.Handler) { return condameshv1connect.NewPackageServiceHandler(r, opts...) },
		func() (string, http.Handler) { return condameshv1connect.NewKeyServiceHandler(r, opts...) },
		func() (string, http.Handler) { return condameshv1connect.NewClusterServiceHandler(r, opts...) },
	} {
		path, h := reg()
		s.mux.Handle(path, s.authenticateFirst(h))
	}
}

// who returns the caller of a Connect call, resolved from its headers
// before the body was read (authenticateFirst).
func (r rpc) who(ctx context.Context) (*identity, error) {
	if id, ok := ctx.Value(callerKey{}).(*identity); ok {
		return id, nil
	}
	var h http.Header
	if ci, ok := connect.CallInfoForHandlerContext(ctx); ok {
		h = ci.RequestHeader()
	}
	id, err := r.s.identify(ctx, h)
	return id, connectError(err)
}

func (r rpc) CreateChannel(ctx context.Context, req *v1.CreateChannelRequest) (*v1.CreateChannelResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetChannel() == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errMissing("channel"))
	}
	ci, err := r.s.createChannel(ctx, id, req)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.CreateChannelResponse{Channel: ci}, nil
}

func (r rpc) GetChannel(ctx context.Context, req *v1.GetChannelRequest) (*v1.GetChannelResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	ci, err := r.s.getChannel(ctx, id, req.GetName())
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.GetChannelResponse{Channel: ci}, nil
}

func (r rpc) ListChannels(ctx context.Context, req *v1.ListChannelsRequest) (*v1.ListChannelsResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	cis, err := r.s.listChannels(ctx, id, req.GetMemberOnly(), req.GetQuery())
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.ListChannelsResponse{Channels: cis}, nil
}

func (r rpc) UpdateChannel(ctx context.Context, req *v1.UpdateChannelRequest) (*v1.UpdateChannelResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	ci, err := r.s.updateChannel(ctx, id, req, nil)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.UpdateChannelResponse{Channel: ci}, nil
}

func (r rpc) DeleteChannel(ctx context.Context, req *v1.DeleteChannelRequest) (*v1.DeleteChannelResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.s.deleteChannel(ctx, id, req.GetName()); err != nil {
		return nil, connectError(err)
	}
	return &v1.DeleteChannelResponse{}, nil
}

func (r rpc) ListPackages(ctx context.Context, req *v1.ListPackagesRequest) (*v1.ListPackagesResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := r.s.listPackages(ctx, id, req.GetChannel())
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.ListPackagesResponse{Packages: ps}, nil
}

func (r rpc) ListVersions(ctx context.Context, req *v1.ListVersionsRequest) (*v1.ListVersionsResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	ch, p, err := r.s.packageFor(ctx, id, req.GetChannel(), req.GetPackage())
	if err != nil {
		return nil, connectError(err)
	}
	vs, err := r.s.cat.Versions(ctx, ch.Name, p.Name)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.ListVersionsResponse{Versions: vs}, nil
}

func (r rpc) DeletePackage(ctx context.Context, req *v1.DeletePackageRequest) (*v1.DeletePackageResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.s.deletePackage(ctx, id, req.GetChannel(), req.GetName()); err != nil {
		return nil, connectError(err)
	}
	return &v1.DeletePackageResponse{}, nil
}

func (r rpc) DeleteVersion(ctx context.Context, req *v1.DeleteVersionRequest) (*v1.DeleteVersionResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := r.s.channelFor(ctx, id, req.GetChannel())
	if err != nil {
		return nil, connectError(err)
	}
	v, err := r.s.cat.Version(ctx, ch.Name, req.GetPlatform(), req.GetFilename())
	if err != nil {
		return nil, connectError(err)
	}
	if err := r.s.deleteVersion(ctx, id, ch, v); err != nil {
		return nil, connectError(err)
	}
	return &v1.DeleteVersionResponse{}, nil
}

func (r rpc) CreateKey(ctx context.Context, req *v1.CreateKeyRequest) (*v1.CreateKeyResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	key, info, err := r.s.createKey(ctx, id, req)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.CreateKeyResponse{Key: key, Info: info}, nil
}

func (r rpc) ListKeys(ctx context.Context, _ *v1.ListKeysRequest) (*v1.ListKeysResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := r.s.listKeys(ctx, id)
	if err != nil {
		return nil, connectError(err)
	}
	return &v1.ListKeysResponse{Keys: keys}, nil
}

func (r rpc) DeleteKey(ctx context.Context, req *v1.DeleteKeyRequest) (*v1.DeleteKeyResponse, error) {
	id, err := r.who(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.s.deleteKey(ctx, id, req.GetKey()); err != nil {
		return nil, connectError(err)
	}
	return &v1.DeleteKeyResponse{}, nil
}

type errMissing string

func (e errMissing) Error() string { return "missing field " + string(e) }
