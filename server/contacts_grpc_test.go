package server_test

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// ContactsService is served to grpc-go (the gRPC stack Flutter and grpcurl
// speak), reported by health and listed by reflection.
func TestContactsServiceOverGRPCGo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	conn := e.grpcConn(t)
	alice, bob := e.signUp("alice"), e.signUp("bob")
	as := func(a account) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.tokens.GetAccessToken())
	}

	sent := &parleyv1.SendFriendRequestResponse{}
	if err := conn.Invoke(as(alice), parleyv1connect.ContactsServiceSendFriendRequestProcedure,
		&parleyv1.SendFriendRequestRequest{UserId: bob.user.GetId(), Greeting: "over gRPC"}, sent); err != nil {
		t.Fatalf("SendFriendRequest: %v", err)
	}
	listed := &parleyv1.ListFriendRequestsResponse{}
	if err := conn.Invoke(as(bob), parleyv1connect.ContactsServiceListFriendRequestsProcedure,
		&parleyv1.ListFriendRequestsRequest{Direction: incoming}, listed); err != nil {
		t.Fatalf("ListFriendRequests: %v", err)
	}
	if got := listed.GetFriendRequests(); len(got) != 1 || got[0].GetId() != sent.GetFriendRequest().GetId() || got[0].GetGreeting() != "over gRPC" {
		t.Errorf("bob's incoming requests: got %v, want alice's", got)
	}
	err := conn.Invoke(as(alice), parleyv1connect.ContactsServiceRespondFriendRequestProcedure,
		&parleyv1.RespondFriendRequestRequest{RequestId: sent.GetFriendRequest().GetId(), Decision: accept}, &parleyv1.RespondFriendRequestResponse{})
	wantGRPCCode(t, err, codes.NotFound)
	err = conn.Invoke(context.Background(), parleyv1connect.ContactsServiceListContactsProcedure,
		&parleyv1.ListContactsRequest{}, &parleyv1.ListContactsResponse{})
	wantGRPCCode(t, err, codes.Unauthenticated)

	res, err := grpc_health_v1.NewHealthClient(conn).Check(context.Background(),
		&grpc_health_v1.HealthCheckRequest{Service: parleyv1connect.ContactsServiceName})
	if err != nil || res.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("health of %s: got %v, %v, want SERVING", parleyv1connect.ContactsServiceName, res, err)
	}

	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend() //nolint:errcheck // the test is over
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{ListServices: "*"},
	}); err != nil {
		t.Fatal(err)
	}
	list, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range list.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !slices.Contains(services, parleyv1connect.ContactsServiceName) {
		t.Errorf("reflection lists %v, want %s among them", services, parleyv1connect.ContactsServiceName)
	}
}
