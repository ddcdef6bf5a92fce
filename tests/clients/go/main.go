// A Go backend calling the gateway on stubs that `buf generate` made from proto/ (go_package
// saas-llm.gateway/gen/go/saas_llm/v1). Run by tests/clients/test_go_client.py:
//
//	go run . <target> <team_id> <team_key>
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	saasllmv1 "saas-llm.gateway/gen/go/saas_llm/v1"
)

func main() {
	target, teamID, key := os.Args[1], os.Args[2], os.Args[3]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	jobs := saasllmv1.NewJobServiceClient(conn)

	job, err := jobs.CreateJob(ctx, &saasllmv1.CreateJobRequest{TeamId: teamID, JobType: "go"})
	if err != nil {
		panic(err)
	}
	message := &saasllmv1.ChatMessage{Role: "user", TypedContent: &saasllmv1.ChatMessage_Text{Text: "Hello from Go"}}
	answer, err := jobs.LlmCall(ctx, &saasllmv1.LlmCallRequest{JobId: job.JobId, Messages: []*saasllmv1.ChatMessage{message}})
	if err != nil {
		panic(err)
	}
	fmt.Println("content:", answer.Response.Content)
	done, err := jobs.CompleteJob(ctx, &saasllmv1.CompleteJobRequest{JobId: job.JobId, Status: "completed"})
	if err != nil {
		panic(err)
	}
	fmt.Println("credits_remaining:", done.Costs.CreditsRemaining)

	_, err = jobs.GetJob(ctx, &saasllmv1.GetJobRequest{JobId: "00000000-0000-4000-8000-000000000000"})
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			fmt.Println("reason:", info.Reason)
		}
	}
}
