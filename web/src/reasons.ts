// Check-in and enrolment reason codes in plain words (the codes themselves are
// the API's stable contract; these texts may change).

const CHECKIN: Record<string, string> = {
  OK: "checked in",
  TICKET_ALREADY_USED: "this ticket was already used",
  TICKET_INVALID: "this is not a valid ticket for this session",
  TICKET_EXPIRED: "this ticket has expired",
  TICKET_REPLACED: "a newer ticket replaced this one",
  NOT_YET_OPEN: "check-in has not opened yet",
  SESSION_CANCELLED: "this session is cancelled",
  TOO_MANY_ATTEMPTS: "too many failed attempts: ask a host",
  FACE_NOT_ENROLLED: "this member has not enrolled a face",
  FACE_ENROLMENT_STALE: "this member must enrol their face again",
  FACE_MISMATCH: "the face does not match the ticket's owner",
  NO_FACE: "no face in the photo",
  SEVERAL_FACES: "more than one face in the photo",
  VERIFICATION_TIMEOUT: "the face check took too long",
  VERIFIER_UNAVAILABLE: "the face check is unavailable",
  FORBIDDEN: "this kiosk's account does not host the session",
  RATE_LIMITED: "too many scans at once: wait a moment",
  OFFLINE: "the server cannot be reached",
};

const ENROLMENT: Record<string, string> = {
  no_face: "We could not see a face.",
  several_faces: "Only one person in the picture, please.",
  too_small: "Come closer to the camera.",
  too_dark: "It is too dark: find more light.",
  blurred: "The picture is blurred: hold still.",
  wrong_pose: "That was not the pose asked for.",
  not_smiling: "Give us a bigger smile.",
  different_person: "This does not look like the person in the first picture.",
};

export function describeReason(code: string | null | undefined): string {
  if (!code) return "unknown reason";
  return CHECKIN[code] ?? code;
}

export function describeFrameReason(code: string | null | undefined): string {
  if (!code) return "The picture was not accepted.";
  return ENROLMENT[code] ?? code;
}
