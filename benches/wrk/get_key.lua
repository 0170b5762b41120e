-- POST /records/get for one fixed key (KEY, sk "s"): cluster_reads.sh picks one the node serves
-- itself and one it must ask a peer for.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"Records":[{"pk":"%s","sk":"s"}]}', os.getenv("KEY"))
