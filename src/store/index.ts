export * from "./connect.js";
export * from "./cursor.js";
export * from "./keys.js";
export * from "./lease.js";
export * from "./log.js";
export * from "./maintenance.js";
export * from "./marker.js";
export * from "./writer.js";
