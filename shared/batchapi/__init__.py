"""The batch APIs: job names and states, wire parsing, the REST client (GET and list), HTTP pools and
the Vertex AI quota. Nothing here touches Firestore or Pub/Sub."""
