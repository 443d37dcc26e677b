// The playground page: join a room of your own, hear and see the avatar, talk to the agent.
//
// Everything it loads comes from the playground's server: livekit-client's browser
// bundle (/vendor/livekit-client.umd.js, global `LivekitClient`) and this file. The
// server mints the token (POST /api/connect) and proxies the emulator's session list
// (GET /api/sessions); the LiveKit secret and the Protoface key never reach the page.
//
// `window.playground` holds what the page shows, for tests and for the curious:
// connection, agents (the agents in the room), following (the one the page follows),
// followingAvatar (its avatar), videoFrom (whose video is shown), avatarState,
// videoWidth/videoHeight, videoFrames, avatarLevel, micEnabled, micLevel, turns,
// transcript, events, sessions, conversation ({sessionsStarted, billableSeconds,
// current}: this tab's room's hosted sessions), error.
//
// With several agents in the room, the page follows one (the first, or the one picked
// in "following"): the video, the state, the level and the turns are that agent's and
// its own avatar's, paired by `lk.publish_on_behalf` as LiveKit's frontends pair them.
// Everyone's audio plays.
"use strict";

(() => {
  const LK = window.LivekitClient;
  const AVATAR_STATE_ATTR = "protoface.avatar_state";
  const TURNS_ATTR = "playground.turns";
  const AGENT_STATE_ATTR = "lk.agent.state";
  const ON_BEHALF_ATTR = "lk.publish_on_behalf";
  const TERMINAL = new Set(["ended", "failed", "canceled", "cancelled", "expired"]);

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $("connection"),
    roomName: $("room-name"),
    video: $("avatar-video"),
    placeholder: $("video-placeholder"),
    avatarState: $("avatar-state"),
    followBox: $("follow-box"),
    follow: $("follow"),
    audioSink: $("audio-sink"),
    avatarLevel: $("avatar-level"),
    micLevel: $("mic-level"),
    connect: $("connect"),
    mic: $("mic"),
    enableAudio: $("enable-audio"),
    videoInfo: $("video-info"),
    turns: $("turns"),
    error: $("error"),
    transcript: $("transcript"),
    events: $("events"),
    sessions: document.querySelector("#sessions tbody"),
    conversation: $("conversation"),
  };

  const state = {
    connection: "idle",
    room: null,
    identity: null,
    agents: [],
    following: null,
    followingAvatar: null,
    videoFrom: null,
    avatarState: null,
    videoWidth: 0,
    videoHeight: 0,
    videoFrames: 0,
    avatarLevel: 0,
    micEnabled: false,
    micLevel: 0,
    audioPlaybackAllowed: null,
    turns: null,
    transcript: [],
    events: [],
    sessions: [],
    conversation: { sessionsStarted: 0, billableSeconds: 0, current: null },
    error: null,
  };
  window.playground = state;

  let room = null;
  let sawAvatar = false;
  const remoteAudio = new Map(); // track sid -> { track, participant, energy }
  const remoteVideo = new Map(); // participant identity -> video track
  let shownVideo = null; // the track attached to the <video>
  let picked = null; // the agent picked in "following"
  const startedAt = performance.now();

  // -- small helpers ------------------------------------------------------------------

  function clock() {
    return ((performance.now() - startedAt) / 1000).toFixed(1).padStart(6, " ") + " s";
  }

  function logEvent(text) {
    state.events.push({ at: performance.now(), text });
    const li = document.createElement("li");
    li.innerHTML = `<span class="when"></span>`;
    li.firstChild.textContent = clock();
    li.append(document.createTextNode(text));
    ui.events.prepend(li);
  }

  function showError(message) {
    state.error = message;
    ui.error.textContent = message;
    ui.error.hidden = !message;
  }

  function setConnection(value) {
    if (state.connection === value) return;
    state.connection = value;
    ui.connection.dataset.state = value;
    ui.connection.textContent = value;
    logEvent(`connection: ${value}`);
  }

  // -- who is who ---------------------------------------------------------------------

  function isAvatar(p) {
    return Boolean(p.attributes && p.attributes[ON_BEHALF_ATTR]);
  }

  function agents() {
    if (!room) return [];
    return [...room.remoteParticipants.values()].filter((p) => p.isAgent && !isAvatar(p));
  }

  // The agent the page follows: the one picked, while it is here; else the one it
  // followed, while it is here; else the first.
  function agentParticipant() {
    const all = agents();
    const find = (identity) => all.find((p) => p.identity === identity);
    return find(picked) || find(state.following) || all[0] || null;
  }

  // The avatar speaking for the followed agent.
  function avatarParticipant() {
    const agent = agentParticipant();
    if (!agent) return null;
    for (const p of room.remoteParticipants.values()) {
      if (isAvatar(p) && p.attributes[ON_BEHALF_ATTR] === agent.identity) return p;
    }
    return null;
  }

  // Whether `participant` is the followed agent or its avatar.
  function followed(participant) {
    const agent = agentParticipant();
    return Boolean(
      agent &&
        (participant.identity === agent.identity ||
          (participant.attributes && participant.attributes[ON_BEHALF_ATTR] === agent.identity)),
    );
  }

  function renderFollow() {
    const all = agents().map((p) => p.identity);
    const agent = agentParticipant();
    const following = agent ? agent.identity : null;
    const changed = following !== state.following;
    if (changed) {
      if (following) logEvent(`following ${following}`);
      sawAvatar = false;
    }
    state.following = following;
    if (all.join("\n") !== state.agents.join("\n")) {
      state.agents = all;
      ui.follow.replaceChildren(
        ...all.map((identity) => {
          const option = document.createElement("option");
          option.value = option.textContent = identity;
          return option;
        }),
      );
    }
    ui.follow.value = following || "";
    ui.followBox.hidden = all.length < 2;
    if (changed) {
      state.avatarState = undefined; // said again for the agent now followed
      state.turns = null;
      ui.turns.textContent = "";
    }
  }

  // The agent says where its avatar is (protoface.avatar_state, the bundled agent);
  // for other agents, the avatar's presence and the agent's own state tell.
  function computeAvatarState() {
    const agent = agentParticipant();
    if (!agent) return null;
    const published = agent.attributes[AVATAR_STATE_ATTR];
    if (published) return published;
    const avatar = avatarParticipant();
    if (!avatar) return sawAvatar ? "lost" : "joining";
    return agent.attributes[AGENT_STATE_ATTR] === "speaking" ? "speaking" : "listening";
  }

  function refreshAgent() {
    renderFollow();
    showVideo();
    const avatar = avatarParticipant();
    state.followingAvatar = avatar ? avatar.identity : null;
    if (avatar) sawAvatar = true;
    const next = computeAvatarState();
    if (next !== state.avatarState) {
      state.avatarState = next;
      ui.avatarState.dataset.state = next || "none";
      ui.avatarState.textContent = next ? `avatar: ${next}` : "no agent yet";
      if (next) logEvent(`avatar: ${next}`);
      ui.placeholder.textContent =
        next === "lost"
          ? "avatar lost: the agent goes on with audio only"
          : next === "joining"
            ? "the avatar is joining…"
            : "the avatar appears here";
    }
    const agent = agentParticipant();
    const turns = agent && agent.attributes[TURNS_ATTR];
    if (turns) {
      try {
        state.turns = JSON.parse(turns);
        const t = state.turns;
        ui.turns.textContent = `turns: ${t.heard} heard, ${t.echoed} echoed, ${t.interrupted} interrupted`;
      } catch (_) {
        /* an agent of the user's may publish anything */
      }
    }
  }

  // -- media --------------------------------------------------------------------------

  function countFrames() {
    const count = () => {
      state.videoFrames += 1;
      ui.video.requestVideoFrameCallback(count);
    };
    if (ui.video.requestVideoFrameCallback) ui.video.requestVideoFrameCallback(count);
  }

  // Shows the followed agent's avatar's video (or the agent's own, if it has one).
  function showVideo() {
    const avatar = avatarParticipant();
    const agent = agentParticipant();
    const from = [avatar, agent].find((p) => p && remoteVideo.has(p.identity)) || null;
    const track = from ? remoteVideo.get(from.identity) : null;
    if (track === shownVideo) return;
    if (shownVideo) shownVideo.detach(ui.video);
    shownVideo = track;
    state.videoFrom = from ? from.identity : null;
    if (track) {
      track.attach(ui.video);
      logEvent(`showing video from ${from.identity}`);
    }
    ui.placeholder.hidden = Boolean(track);
  }

  function onTrackSubscribed(track, _publication, participant) {
    if (track.kind === LK.Track.Kind.Video) {
      remoteVideo.set(participant.identity, track);
      logEvent(`video from ${participant.identity}`);
    } else if (track.kind === LK.Track.Kind.Audio) {
      const el = track.attach();
      ui.audioSink.append(el);
      remoteAudio.set(track.sid, { track, participant, energy: null });
      logEvent(`audio from ${participant.identity}`);
    }
    refreshAgent();
  }

  function onTrackUnsubscribed(track, _publication, participant) {
    if (track.kind === LK.Track.Kind.Video) {
      if (remoteVideo.get(participant.identity) === track) remoteVideo.delete(participant.identity);
      if (shownVideo === track) {
        track.detach(ui.video);
        shownVideo = null;
        state.videoFrom = null;
      }
      refreshAgent();
      return;
    }
    track.detach().forEach((el) => el.remove());
    remoteAudio.delete(track.sid);
  }

  // RMS since the previous reading, from WebRTC's own energy counters (works before the
  // page may play sound, and needs no AudioContext).
  function rmsSince(stats, memo) {
    if (!stats || stats.totalAudioEnergy === undefined) return { rms: 0, memo };
    const now = { e: stats.totalAudioEnergy, d: stats.totalSamplesDuration };
    let rms = 0;
    if (memo && now.d > memo.d) rms = Math.sqrt(Math.max(0, (now.e - memo.e) / (now.d - memo.d)));
    return { rms, memo: now };
  }

  async function statsOf(report, type) {
    if (!report) return null;
    for (const s of report.values()) if (s.type === type && s.kind !== "video") return s;
    return null;
  }

  let micMemo = null;
  async function sampleLevels() {
    if (!room) return;
    let avatar = 0;
    for (const entry of remoteAudio.values()) {
      if (!followed(entry.participant)) continue;
      const report = await entry.track.getRTCStatsReport().catch(() => null);
      const r = rmsSince(await statsOf(report, "inbound-rtp"), entry.energy);
      entry.energy = r.memo;
      avatar = Math.max(avatar, r.rms);
    }
    state.avatarLevel = avatar;
    ui.avatarLevel.value = Math.min(1, avatar * 5);

    const pub = room.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
    let mic = 0;
    if (pub && pub.track && !pub.isMuted) {
      const report = await pub.track.getRTCStatsReport().catch(() => null);
      const r = rmsSince(await statsOf(report, "media-source"), micMemo);
      micMemo = r.memo;
      mic = r.rms;
    }
    state.micLevel = mic;
    ui.micLevel.value = Math.min(1, mic * 5);

    state.videoWidth = ui.video.videoWidth;
    state.videoHeight = ui.video.videoHeight;
    ui.videoInfo.textContent = state.videoWidth
      ? `video ${state.videoWidth}×${state.videoHeight}, ${state.videoFrames} frames shown`
      : "no video";
  }

  // -- transcript ---------------------------------------------------------------------

  const segments = new Map(); // segment id -> <li>

  async function onTranscription(reader, from) {
    const id = reader.info.attributes?.["lk.segment_id"] || reader.info.id;
    // The agent publishes your transcript too, naming the track it transcribed.
    const local = room ? room.localParticipant : null;
    const track = reader.info.attributes?.["lk.transcribed_track_id"];
    const mine =
      local &&
      (from.identity === local.identity || (track && local.trackPublications.has(track)));
    const who = mine ? "you" : "agent";
    let entry = state.transcript.find((t) => t.id === id);
    if (!entry) {
      entry = { id, who, identity: from.identity, text: "" };
      state.transcript.push(entry);
    }
    let li = segments.get(id);
    if (!li) {
      li = document.createElement("li");
      li.innerHTML = `<span class="who"></span><span class="text"></span>`;
      li.firstChild.textContent = who;
      segments.set(id, li);
      ui.transcript.append(li);
    }
    for await (const chunk of reader) {
      entry.text += chunk;
      li.lastChild.textContent = entry.text;
      ui.transcript.scrollTop = ui.transcript.scrollHeight;
    }
  }

  // -- joining ------------------------------------------------------------------------

  async function join() {
    showError("");
    ui.connect.disabled = true;
    setConnection("connecting");
    try {
      const response = await fetch("/api/connect", { method: "POST" });
      if (!response.ok) throw new Error(`POST /api/connect answered ${response.status}`);
      const { url, token, room: roomName, identity } = await response.json();
      state.room = roomName;
      state.identity = identity;
      ui.roomName.textContent = `room ${roomName}`;

      room = new LK.Room({ adaptiveStream: false, dynacast: false });
      room
        .on(LK.RoomEvent.ConnectionStateChanged, (s) => setConnection(s))
        .on(LK.RoomEvent.TrackSubscribed, onTrackSubscribed)
        .on(LK.RoomEvent.TrackUnsubscribed, onTrackUnsubscribed)
        .on(LK.RoomEvent.ParticipantConnected, (p) => {
          logEvent(`${p.identity} joined`);
          refreshAgent();
        })
        .on(LK.RoomEvent.ParticipantDisconnected, (p) => {
          logEvent(`${p.identity} left`);
          refreshAgent();
        })
        .on(LK.RoomEvent.ParticipantAttributesChanged, () => refreshAgent())
        .on(LK.RoomEvent.AudioPlaybackStatusChanged, () => updatePlayback())
        .on(LK.RoomEvent.LocalTrackPublished, () => updateMic())
        .on(LK.RoomEvent.TrackMuted, () => updateMic())
        .on(LK.RoomEvent.TrackUnmuted, () => updateMic())
        .on(LK.RoomEvent.Disconnected, () => {
          ui.connect.textContent = "Join";
          ui.connect.disabled = false;
          ui.mic.disabled = true;
          room = null;
          state.micEnabled = false;
          remoteVideo.clear();
          refreshAgent();
        });
      room.registerTextStreamHandler("lk.transcription", (reader, from) => {
        onTranscription(reader, from).catch((e) => logEvent(`transcript: ${e}`));
      });
      await room.connect(url, token);
      ui.connect.textContent = "Leave";
      ui.connect.disabled = false;
      ui.mic.disabled = false;
      updatePlayback();
      refreshAgent();
    } catch (e) {
      showError(`could not join: ${e.message || e}`);
      setConnection("disconnected");
      ui.connect.disabled = false;
      room = null;
      throw e;
    }
  }

  async function setMic(enabled) {
    if (!room) return;
    try {
      await room.localParticipant.setMicrophoneEnabled(enabled);
    } catch (e) {
      showError(`microphone: ${e.message || e}`);
    }
    updateMic();
  }

  function updateMic() {
    const pub = room && room.localParticipant.getTrackPublication(LK.Track.Source.Microphone);
    const on = Boolean(pub && pub.track && !pub.isMuted);
    if (on !== state.micEnabled) logEvent(`microphone ${on ? "on" : "off"}`);
    state.micEnabled = on;
    ui.mic.textContent = on ? "Microphone on" : "Microphone off";
    ui.mic.setAttribute("aria-pressed", String(on));
  }

  function updatePlayback() {
    state.audioPlaybackAllowed = room ? room.canPlaybackAudio : null;
    ui.enableAudio.hidden = !room || room.canPlaybackAudio;
  }

  ui.connect.addEventListener("click", async () => {
    if (room) {
      await room.disconnect();
      return;
    }
    await join().catch(() => {});
    await setMic(true);
  });
  ui.mic.addEventListener("click", () => setMic(!state.micEnabled));
  ui.follow.addEventListener("change", () => {
    picked = ui.follow.value;
    refreshAgent();
  });
  ui.enableAudio.addEventListener("click", async () => {
    if (room) await room.startAudio();
    updatePlayback();
  });

  // -- hosted sessions ----------------------------------------------------------------

  function ms(from, to) {
    if (!from || !to) return "";
    return `${Math.round(Date.parse(to) - Date.parse(from))} ms`;
  }

  function duration(s) {
    const start = s.started_at || s.created_at;
    const end = s.ended_at || s.failed_at || (TERMINAL.has(s.status) ? null : new Date().toISOString());
    if (!start || !end) return "";
    return `${Math.max(0, (Date.parse(end) - Date.parse(start)) / 1000).toFixed(1)} s`;
  }

  // This tab's conversation: every hosted session its agent started in its room
  // (replacements and handovers included), and what they bill in all. Usage is
  // the API's `usage.billable_seconds`, eventually consistent while one runs.
  function renderConversation(list) {
    const mine = state.room ? list.filter((s) => s.room_name === state.room) : [];
    const billable = mine.reduce((sum, s) => sum + ((s.usage && s.usage.billable_seconds) || 0), 0);
    const current = mine.find((s) => !TERMINAL.has(s.status)) || null;
    state.conversation = {
      sessionsStarted: mine.length,
      billableSeconds: billable,
      current: current ? { id: current.id, billableSeconds: current.usage?.billable_seconds ?? 0 } : null,
    };
    if (!mine.length) {
      ui.conversation.textContent = "no hosted session for this conversation yet";
      return;
    }
    const now = current
      ? `now ${current.id}: ${state.conversation.current.billableSeconds} billable s; `
      : "";
    const plural = mine.length === 1 ? "" : "s";
    ui.conversation.textContent =
      `this conversation: ${now}${mine.length} hosted session${plural} started, ${billable} billable s in all`;
  }

  function renderSessions(list) {
    state.sessions = list;
    renderConversation(list);
    ui.sessions.replaceChildren();
    for (const s of list) {
      const tr = document.createElement("tr");
      if (state.room && s.room_name === state.room) tr.className = "mine";
      const usage = s.usage ? `${s.usage.billable_seconds} s / ${s.usage.frames}` : "";
      const cells = [
        s.id,
        s.status,
        ms(s.created_at, s.started_at),
        ms(s.created_at, s.first_frame_at),
        duration(s),
        s.failure_code || "",
        usage,
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text ?? "";
        tr.append(td);
      }
      tr.children[0].title = `room ${s.room_name || "?"}${s.failure_message ? " — " + s.failure_message : ""}`;
      tr.children[1].className = `status-${s.status}`;
      const action = document.createElement("td");
      if (!TERMINAL.has(s.status)) {
        const end = document.createElement("button");
        end.type = "button";
        end.textContent = "end";
        end.addEventListener("click", () => endSession(s.id));
        action.append(end);
      }
      tr.append(action);
      ui.sessions.append(tr);
    }
  }

  async function endSession(id) {
    const response = await fetch(`/api/sessions/${encodeURIComponent(id)}/end`, { method: "POST" });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      showError(`ending ${id}: ${body.error || response.status}`);
    } else {
      logEvent(`ended hosted session ${id}`);
    }
    await pollSessions();
  }

  async function pollSessions() {
    try {
      const response = await fetch("/api/sessions");
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || String(response.status));
      renderSessions(body.sessions);
    } catch (e) {
      state.sessionsError = String(e.message || e);
    }
  }

  // -- start --------------------------------------------------------------------------

  countFrames();
  setInterval(() => sampleLevels().catch(() => {}), 100);
  setInterval(() => pollSessions(), 1500);
  pollSessions();

  if (!LK) {
    showError("livekit-client did not load: reinstall protoface-emulator (its wheel carries it), or in a clone of the repository run scripts/install-playground-deps");
    ui.connect.disabled = true;
  } else if (new URLSearchParams(location.search).get("autoconnect") === "1") {
    join()
      .then(() => setMic(true))
      .catch(() => {});
  }
})();
