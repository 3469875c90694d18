//! The echo that `scripts/bench-pinned.sh` measures Warrant against: `warrant.v1.Authorizer` on
//! bare tonic, one worker thread, answering every Check at once with a fixed allow (and a fixed
//! id) and Ping with nothing, so that a load generator sends and reads exactly the messages it
//! would with Warrant. What Warrant costs beyond it is the decision, its record and its checks.
//!
//!   cargo build --release --example echo && target/release/examples/echo 127.0.0.1:50081

use std::net::SocketAddr;

use tonic::{Request, Response, Status};
use warrant_proto as proto;
use warrant_proto::authorizer_server::{Authorizer, AuthorizerServer};

struct Echo;

type Watch = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ApprovalRequestRecord, Status>> + Send>,
>;

#[tonic::async_trait]
impl Authorizer for Echo {
    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(proto::CheckResponse {
            decision: proto::Decision::Allow as i32,
            decision_id: "01939d3c-0000-7000-8000-000000000000".to_owned(),
            request_id: request.request_id,
            ..proto::CheckResponse::default()
        }))
    }

    async fn batch_check(
        &self,
        _request: Request<proto::BatchCheckRequest>,
    ) -> Result<Response<proto::BatchCheckResponse>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    async fn ping(
        &self,
        _request: Request<proto::PingRequest>,
    ) -> Result<Response<proto::PingResponse>, Status> {
        Ok(Response::new(proto::PingResponse {}))
    }

    async fn search_subjects(
        &self,
        _request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    async fn search_resources(
        &self,
        _request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    async fn search_actions(
        &self,
        _request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    async fn request_approval(
        &self,
        _request: Request<proto::RequestApprovalRequest>,
    ) -> Result<Response<proto::ApprovalRequestRecord>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    async fn get_approval_request(
        &self,
        _request: Request<proto::GetApprovalRequestRequest>,
    ) -> Result<Response<proto::ApprovalRequestRecord>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }

    type WatchApprovalRequestStream = Watch;

    async fn watch_approval_request(
        &self,
        _request: Request<proto::GetApprovalRequestRequest>,
    ) -> Result<Response<Watch>, Status> {
        Err(Status::unimplemented("the echo answers Check and Ping"))
    }
}

fn main() -> std::process::ExitCode {
    let address: SocketAddr = match std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50081".into())
        .parse()
    {
        Ok(address) => address,
        Err(error) => {
            eprintln!("echo: the address: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("echo: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        println!("echo listening on {address}");
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(AuthorizerServer::new(Echo))
            .serve(address)
            .await
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
