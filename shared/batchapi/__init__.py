"""The batch APIs, and the one door to them: job names and states, wire parsing, every URL and the API key
(``endpoints``), the REST client (GET and list), Gemini outputs, webhook admin, HTTP pools and the Vertex AI
quota. Nothing here touches Firestore or Pub/Sub; nothing outside it writes a Gemini API or Vertex AI URL."""
