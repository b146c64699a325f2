module embeddinggateway/goclient

go 1.19
