// A fake in-memory database with a version counter per row, so that a test
// can tell a fresh answer from a stale one. Rows that were never written
// exist at version 1.
export class Database {
  constructor() {
    this.courses = new Map();
    this.students = new Map();
    this.users = new Map();
    this.queries = 0; // how often the cached endpoints reached the database
  }

  course(id) {
    return this.courses.get(id) ?? { course_id: id, title: `Course ${id}`, version: 1 };
  }

  student(id) {
    return this.students.get(id) ?? { student_id: id, version: 1 };
  }

  updateCourse(id, fields = {}) {
    const old = this.course(id);
    const row = { ...old, ...pick(fields, ['title']), course_id: id, version: old.version + 1 };
    this.courses.set(id, row);
    return row;
  }

  updateUser(id, fields = {}) {
    const old = this.users.get(id) ?? { user_id: id, version: 0 };
    const row = { ...old, ...pick(fields, ['name', 'email']), user_id: id, version: old.version + 1 };
    this.users.set(id, row);
    return row;
  }

  // The expensive queries the original app cached.

  async courseAnalytics(id) {
    this.queries++;
    const c = this.course(id);
    const n = hash(id);
    return {
      course_id: id,
      title: c.title,
      version: c.version,
      enrolled_students: 20 + (n % 180),
      completion_rate: Math.round(((n % 97) / 97) * 1000) / 1000,
      computed_at: new Date().toISOString(),
    };
  }

  async studentRisk(id) {
    this.queries++;
    const s = this.student(id);
    const n = hash(id);
    const score = Math.round(((n % 101) / 100) * 100) / 100;
    return {
      student_id: id,
      version: s.version,
      risk_score: score,
      risk_level: score > 0.7 ? 'high' : score > 0.4 ? 'medium' : 'low',
      computed_at: new Date().toISOString(),
    };
  }

  async systemStats() {
    this.queries++;
    let version = 0;
    for (const c of this.courses.values()) version += c.version - 1;
    return {
      courses_updated: this.courses.size,
      users: this.users.size,
      version: 1 + version,
      computed_at: new Date().toISOString(),
    };
  }
}

function pick(obj, names) {
  const out = {};
  for (const n of names) if (obj && typeof obj[n] === 'string') out[n] = obj[n];
  return out;
}

function hash(s) {
  let h = 0;
  for (const ch of s) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h;
}
