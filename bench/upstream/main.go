// Command upstream is the benchmarks' fast stand-in for Atlas and for the
// app behind the callback route. It runs in its own process, so that the
// load scripts measure Caddy and not the upstream, and it answers from
// bytes computed at startup:
//
//	POST /v1/docstream/authtoken   a signed JWT (HS256, exp 24h ahead) with
//	                               expires_in, for the configured
//	                               Client-Id and Client-Secret
//	GET  /v1/docstream/extracts    batch_id=BENCH-6 or BENCH-50: a page of 6
//	                               or 50 documents from the simulator's
//	                               generator; the Token header must carry
//	                               the issued token (else 401)
//	POST /v1/docstream/multiupload an upload's answer as Atlas gives it
//	                               (201, [{batch_id, document_id,
//	                               file_uuid}]), a new batch id each
//	                               time; counts uploads and document ids
//	GET  /_payload?docs=N          a callback payload of N documents (an
//	                               extracts page holding the whole batch)
//	GET  /_counts                  the callback sink's and the uploads'
//	                               counts, as JSON
//	POST /_reset                   zeroes them
//	POST anything else             the callback sink: reads the body,
//	                               counts the request, its bytes and its
//	                               distinct X-Atlas-Callback-Id values
//
// Usage: upstream -listen 127.0.0.1:18091 -client-id ID -client-secret S
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/caddy-atlas/caddy-atlas/bench/upstream/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18091", "address to listen on (loopback)")
	clientID := flag.String("client-id", "bench-client", "the Client-Id authtoken accepts")
	clientSecret := flag.String("client-secret", "bench-secret", "the Client-Secret authtoken accepts")
	flag.Parse()

	s, err := server.New(*clientID, *clientSecret)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
