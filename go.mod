module github.com/computetools/compute-tools

go 1.26.0

require (
	github.com/alecthomas/kong v1.17.0
	github.com/coder/websocket v1.8.13
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/getkin/kin-openapi v0.153.0
	github.com/go-jose/go-jose/v4 v4.1.8
	github.com/godbus/dbus/v5 v5.2.4
	github.com/jackc/pgx/v5 v5.12.0
	github.com/klauspost/compress v1.20.1
	github.com/mdlayher/vsock v1.4.0
	github.com/prometheus/client_golang v1.25.0
	// x/sys also carries internal/tcpowner's inet_diag lookup (NETLINK_SOCK_DIAG): one request of
	// fixed layout, so no netlink module (mdlayher/netlink would add two) for it.
	golang.org/x/sys v0.49.0
	// grpc-go and the protobuf runtime serve the tests only: the fake gRPC pageserver
	// (internal/pageservertest) over the generated page_api code (internal/pageserver/pageapi).
	// compute-init, which runs at every compute start, speaks gRPC to the pageserver with a
	// hand-written client on net/http (internal/pageserver/grpc.go): linked into
	// compute-init, grpc-go measured +0.85 ms of package init (median of `GODEBUG=inittrace=1
	// compute-init --help`, 1.37 -> 2.23 ms, 59 more packages) and +6.1 MB (21.4 -> 27.5 MB);
	// the hand-written client adds no init and 0.13 MB. internal/archtest keeps them out.
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/go-openapi/jsonpointer v0.22.5 // indirect
	github.com/go-openapi/swag/jsonname v0.25.5 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/mdlayher/socket v0.8.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3 // indirect
	go.yaml.in/yaml/v4 v4.0.0 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)
