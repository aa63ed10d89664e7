// Sends one test message to the local relay: `npx bun scripts/send-test.ts someone@example.test [host:port]`.
import nodemailer from "nodemailer";

const [to = "someone@example.test", server = "127.0.0.1:2525"] = process.argv.slice(2);
const [host, port] = server.split(":");
const transport = nodemailer.createTransport({ host, port: Number(port), secure: false, ignoreTLS: true });
const info = await transport.sendMail({
  from: "trial@localhost.test",
  to,
  subject: "mailraven test message",
  text: `Sent at ${new Date().toISOString()} through mailraven.\n`,
});
console.log(info.response);
