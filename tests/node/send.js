// Sends one mail through @sendgrid/mail, unchanged but for the base URL, and prints the status.
// Usage: MAILRELAY_URL=http://127.0.0.1:PORT SENDGRID_API_KEY=SG.x.y node send.js
const sgMail = require("@sendgrid/mail");
const { Client } = require("@sendgrid/client");

const client = new Client();
client.setApiKey(process.env.SENDGRID_API_KEY);
client.setDefaultRequest("baseUrl", process.env.MAILRELAY_URL);
sgMail.setClient(client);

sgMail
  .send({
    to: "node@example.net",
    from: { email: "shop@example.com", name: "Node Shop" },
    subject: "From Node",
    text: "Sent with @sendgrid/mail.",
    html: "<p>Sent with <b>@sendgrid/mail</b>.</p>",
    categories: ["node"],
  })
  .then(([response]) => {
    console.log(JSON.stringify({ status: response.statusCode, messageId: response.headers["x-message-id"] }));
  })
  .catch((error) => {
    const body = error.response ? error.response.body : String(error);
    console.log(JSON.stringify({ status: error.code || 0, body }));
    process.exitCode = 1;
  });
