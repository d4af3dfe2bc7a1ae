package server_test

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// TestGRPCGoClient talks to the server with grpc-go's own client rather than
// connect-go's, as Flutter's and grpcurl's gRPC stacks do: the generated
// messages over grpc.ClientConn.Invoke, the health service and reflection.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn := e.grpcConn(t)
	ctx := context.Background()

	t.Run("the account lifecycle works", func(t *testing.T) {
		invoke := func(ctx context.Context, procedure string, req, res proto.Message) error {
			return conn.Invoke(ctx, procedure, req, res)
		}
		if err := invoke(ctx, parleyv1connect.AuthServiceRegisterProcedure,
			&parleyv1.RegisterRequest{Username: "grpc_user", Password: "grpc password", DisplayName: "gRPC"},
			&parleyv1.RegisterResponse{}); err != nil {
			t.Fatalf("Register: %v", err)
		}
		login := &parleyv1.LoginResponse{}
		if err := invoke(ctx, parleyv1connect.AuthServiceLoginProcedure,
			&parleyv1.LoginRequest{Username: "grpc_user", Password: "grpc password", DeviceName: "flutter", Platform: parleyv1.Platform_PLATFORM_ANDROID},
			login); err != nil {
			t.Fatalf("Login: %v", err)
		}
		withToken := func(token string) context.Context {
			return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}

		me := &parleyv1.GetMeResponse{}
		if err := invoke(withToken(login.GetTokens().GetAccessToken()), parleyv1connect.AuthServiceGetMeProcedure, &parleyv1.GetMeRequest{}, me); err != nil {
			t.Fatalf("GetMe: %v", err)
		}
		if got, want := me.GetUser().GetUsername(), "grpc_user"; got != want {
			t.Errorf("got username %q, want %q", got, want)
		}

		refreshed := &parleyv1.RefreshResponse{}
		if err := invoke(ctx, parleyv1connect.AuthServiceRefreshProcedure,
			&parleyv1.RefreshRequest{RefreshToken: login.GetTokens().GetRefreshToken()}, refreshed); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		access := withToken(refreshed.GetTokens().GetAccessToken())
		if err := invoke(access, parleyv1connect.AuthServiceLogoutProcedure, &parleyv1.LogoutRequest{}, &parleyv1.LogoutResponse{}); err != nil {
			t.Fatalf("Logout: %v", err)
		}

		err := invoke(access, parleyv1connect.AuthServiceGetMeProcedure, &parleyv1.GetMeRequest{}, &parleyv1.GetMeResponse{})
		wantGRPCCode(t, err, codes.Unauthenticated)
		err = invoke(ctx, parleyv1connect.AuthServiceGetMeProcedure, &parleyv1.GetMeRequest{}, &parleyv1.GetMeResponse{})
		wantGRPCCode(t, err, codes.Unauthenticated)
		err = invoke(ctx, parleyv1connect.AuthServiceRegisterProcedure,
			&parleyv1.RegisterRequest{Username: "x", Password: "short", DisplayName: ""}, &parleyv1.RegisterResponse{})
		wantGRPCCode(t, err, codes.InvalidArgument)
	})

	t.Run("health reports SERVING", func(t *testing.T) {
		health := grpc_health_v1.NewHealthClient(conn)
		for _, service := range []string{"", parleyv1connect.AuthServiceName, parleyv1connect.GroupsServiceName} {
			res, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
			if err != nil {
				t.Fatalf("Check(%q): %v", service, err)
			}
			if got := res.GetStatus(); got != grpc_health_v1.HealthCheckResponse_SERVING {
				t.Errorf("Check(%q) = %v, want SERVING", service, got)
			}
		}
		_, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "no.such.Service"})
		wantGRPCCode(t, err, codes.NotFound)
	})

	t.Run("reflection v1 lists the services and describes the API", func(t *testing.T) {
		stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.CloseSend() //nolint:errcheck // the test is over
		ask := func(req *reflectionv1.ServerReflectionRequest) *reflectionv1.ServerReflectionResponse {
			t.Helper()
			if err := stream.Send(req); err != nil {
				t.Fatalf("send reflection request: %v", err)
			}
			res, err := stream.Recv()
			if err != nil {
				t.Fatalf("receive reflection response: %v", err)
			}
			if e := res.GetErrorResponse(); e != nil {
				t.Fatalf("reflection error for %v: %s", req, e.GetErrorMessage())
			}
			return res
		}

		var services []string
		for _, s := range ask(&reflectionv1.ServerReflectionRequest{
			MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{ListServices: "*"},
		}).GetListServicesResponse().GetService() {
			services = append(services, s.GetName())
		}
		for _, want := range []string{parleyv1connect.AuthServiceName, parleyv1connect.GroupsServiceName, grpc_health_v1.Health_ServiceDesc.ServiceName} {
			if !slices.Contains(services, want) {
				t.Errorf("reflection lists %v, want %s among them", services, want)
			}
		}

		// Describing a method needs the service's file and all its imports,
		// fetched the way grpcurl fetches them.
		files := map[string]*descriptorpb.FileDescriptorProto{}
		add := func(res *reflectionv1.ServerReflectionResponse) {
			for _, b := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
				fd := &descriptorpb.FileDescriptorProto{}
				if err := proto.Unmarshal(b, fd); err != nil {
					t.Fatalf("decode file descriptor: %v", err)
				}
				files[fd.GetName()] = fd
			}
		}
		add(ask(&reflectionv1.ServerReflectionRequest{
			MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: parleyv1connect.AuthServiceName},
		}))
		for missing := true; missing; {
			missing = false
			for _, fd := range files {
				for _, dep := range fd.GetDependency() {
					if _, ok := files[dep]; !ok {
						missing = true
						add(ask(&reflectionv1.ServerReflectionRequest{
							MessageRequest: &reflectionv1.ServerReflectionRequest_FileByFilename{FileByFilename: dep},
						}))
					}
				}
			}
		}
		set := &descriptorpb.FileDescriptorSet{}
		for _, fd := range files {
			set.File = append(set.File, fd)
		}
		registry, err := protodesc.NewFiles(set)
		if err != nil {
			t.Fatalf("the reflected descriptors do not form a complete set: %v", err)
		}
		if _, err := registry.FindDescriptorByName(parleyv1connect.AuthServiceName + ".Register"); err != nil {
			t.Errorf("reflection cannot describe Register: %v", err)
		}
	})

	t.Run("reflection v1alpha lists the services", func(t *testing.T) {
		stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.CloseSend() //nolint:errcheck // the test is over
		if err := stream.Send(&reflectionv1alpha.ServerReflectionRequest{
			MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{ListServices: "*"},
		}); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var services []string
		for _, s := range res.GetListServicesResponse().GetService() {
			services = append(services, s.GetName())
		}
		if !slices.Contains(services, parleyv1connect.AuthServiceName) {
			t.Errorf("reflection v1alpha lists %v, want %s among them", services, parleyv1connect.AuthServiceName)
		}
	})
}

// grpcConn is a grpc-go client connection to the server, trusting its test
// certificate.
func (e *env) grpcConn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	conn, err := grpc.NewClient(strings.TrimPrefix(e.srv.URL, "https://"),
		grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func wantGRPCCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); err == nil || got != want {
		t.Fatalf("got error %v (code %v), want code %v", err, got, want)
	}
}
